"""Gunicorn run in-process with onemodel's packaged settings and hooks (``onemodel serve``).

The same configuration as ``gunicorn -c gunicorn.conf.py wsgi:app``: the settings and hooks
of ``onemodel.master.config`` (which ``gunicorn.conf.py`` re-exports), then
``GUNICORN_CMD_ARGS``, then the command's own flags, in Gunicorn's order of precedence. The
app is built by its factory in each worker after fork, never in the master.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication

# The app factory, called in each worker (what wsgi.py does for `gunicorn wsgi:app`).
APP = "onemodel.web.app:create_app()"


class OneModelApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """Gunicorn's master with onemodel's settings and hooks, serving ``create_app()``."""

    def __init__(self, config: ModuleType, overrides: Mapping[str, Any] | None = None) -> None:
        self._config = config
        self._overrides = dict(overrides or {})
        self._loads = 0
        super().__init__(prog="onemodel serve")

    def load_config(self) -> None:
        """Apply the settings module, then GUNICORN_CMD_ARGS, then the overrides."""
        if self._loads:
            # Gunicorn re-reads its config file on SIGHUP; the module reads the environment
            # when it runs, so it runs again. Hook state lives in onemodel.master.hooks.
            self._config = importlib.reload(self._config)
        self._loads += 1
        for name, value in config_settings(self._config, self.cfg.settings).items():
            self.cfg.set(name, value)
        parser = self.cfg.parser()
        environment_args = parser.parse_args(self.cfg.get_cmd_args_from_env())
        for name, value in vars(environment_args).items():
            # Gunicorn's command line names a config file and an app: ours are fixed.
            if value is not None and name not in ("args", "config"):
                self.cfg.set(name.lower(), value)
        for name, value in self._overrides.items():
            self.cfg.set(name, value)
        self.cfg.set("default_proc_name", "onemodel")

    def load(self) -> Any:
        """Build the app in a worker (after fork: ``preload_app`` is off), as Gunicorn would."""
        # By name, through Gunicorn's own loader, as `gunicorn ... wsgi:app` does: this
        # module runs in the master, which never imports the Flask app.
        return util.import_app(APP)


def config_settings(module: ModuleType, known: Mapping[str, Any]) -> dict[str, Any]:
    """Return the module's Gunicorn settings and hooks: the names Gunicorn knows."""
    return {name.lower(): value for name, value in vars(module).items() if name in known}
