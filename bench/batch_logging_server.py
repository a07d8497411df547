"""Investigation aid: onemodel's model server with every batch appended to a JSONL file."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from onemodel.model_server import main as server
from onemodel.model_server.batcher import Batcher, BatchRecord


def recording_batcher(log: TextIO) -> type[Batcher]:
    """Return a Batcher subclass that writes one JSON line per model call."""

    def record(batch: BatchRecord) -> None:
        line = {
            "t": round(time.monotonic(), 6),
            "size": batch.size,
            "requests": batch.requests,
            "queue_wait_ms": round(1000 * batch.queue_wait_s, 3),
            "inference_ms": round(1000 * batch.inference_s, 3),
            "failed": batch.failed,
        }
        log.write(json.dumps(line) + "\n")

    class RecordingBatcher(Batcher):
        """The service's batcher, reporting each batch."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["on_batch"] = record
            super().__init__(*args, **kwargs)

    return RecordingBatcher


def main() -> int:
    """``python bench/batch_logging_server.py BATCH_LOG [model_server.py flags...]``."""
    if len(sys.argv) < 2:
        raise SystemExit(main.__doc__)
    with open(sys.argv[1], "a", buffering=1, encoding="utf-8") as log:
        server.Batcher = recording_batcher(log)  # type: ignore[misc]
        return server.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
