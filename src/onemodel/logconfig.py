"""Logging set-up for the processes (called by entry points, never at import)."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    """Log to stderr with timestamps, process id and logger name; LOG_LEVEL sets the level."""
    chosen = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=getattr(logging, chosen, logging.INFO),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
