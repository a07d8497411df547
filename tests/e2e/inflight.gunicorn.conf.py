"""Our gunicorn.conf.py, plus a hook marking each request as a worker starts handling it."""

import os
from pathlib import Path
from typing import Any

_CONFIG = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
exec(compile(_CONFIG.read_text(), str(_CONFIG), "exec"))


def pre_request(worker: Any, req: Any) -> None:
    """Touch $ONEMODEL_INFLIGHT_DIR/<X-Request-ID>: the test then knows the request is in flight."""
    request_id = dict(req.headers).get("X-REQUEST-ID", "")
    if request_id.isidentifier():
        (Path(os.environ["ONEMODEL_INFLIGHT_DIR"]) / request_id).touch()
