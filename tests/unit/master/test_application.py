"""``onemodel serve`` configures Gunicorn exactly as ``gunicorn -c gunicorn.conf.py`` does."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import pytest
from gunicorn.app.wsgiapp import WSGIApplication

from onemodel.master.application import OneModelApplication
from tests.support.processes import ROOT

# Settings that name Gunicorn's inputs rather than configure it.
_INPUTS = {"config", "default_proc_name"}


@pytest.fixture(autouse=True)
def gunicorn_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "WEB_THREADS", "HOST", "PORT"):
        monkeypatch.delenv(name, raising=False)


def _config() -> ModuleType:
    return importlib.reload(importlib.import_module("onemodel.master.config"))


def _values(application: Any) -> dict[str, Any]:
    return {
        name: setting.get()
        for name, setting in application.cfg.settings.items()
        if name not in _INPUTS
    }


def _gunicorn_cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
    monkeypatch.setattr(sys, "argv", ["gunicorn", *argv])
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # gunicorn inserts its chdir
    return WSGIApplication()


def test_every_setting_and_hook_equals_gunicorn_with_the_config_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_THREADS", "3")
    reference = _values(
        _gunicorn_cli(monkeypatch, "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app")
    )
    ours = _values(OneModelApplication(_config()))
    assert ours == reference
    # ...and they are onemodel's, not Gunicorn's defaults.
    assert ours["threads"] == 3
    assert ours["worker_class"] == "onemodel.web.worker.GuardedThreadWorker"
    assert ours["on_starting"].__module__ == "onemodel.master.hooks"
    assert ours["preload_app"] is False


def test_flags_win_over_gunicorn_cmd_args_which_win_over_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 5 --keep-alive 9")
    application = OneModelApplication(_config(), {"workers": 3})
    assert application.cfg.workers == 3
    assert application.cfg.keepalive == 9
    assert application.cfg.threads == 8  # the config's default


def test_a_reload_reads_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_THREADS", "3")
    application = OneModelApplication(_config())
    assert application.cfg.threads == 3
    monkeypatch.setenv("WEB_THREADS", "5")
    application.reload()  # what Gunicorn's master does on SIGHUP
    assert application.cfg.threads == 5
