"""Our gunicorn.conf.py, plus a hook recording which heavy modules each worker has imported."""

import json
import os
import sys
from pathlib import Path

_CONFIG = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
exec(compile(_CONFIG.read_text(), str(_CONFIG), "exec"))

_HEAVY = ("tensorflow", "keras", "tf_keras", "tensorboard", "jax", "torch")


def post_request(worker, req, environ, resp):
    """Write this worker's loaded heavy modules to $ONEMODEL_PROBE_DIR/<pid>.json."""
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in _HEAVY)
    target = Path(os.environ["ONEMODEL_PROBE_DIR"]) / f"{os.getpid()}.json"
    target.write_text(json.dumps({"modules": loaded}))
