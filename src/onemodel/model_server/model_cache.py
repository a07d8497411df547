"""The cache of converted models: OpenVINO IR directories keyed by what the model is made of.

Layout: ``<root>/openvino/<key>/`` holds ``model.xml``, ``model.bin`` and ``metadata.json``
(written last). An entry is written into a temporary directory and renamed into place, so a
reader sees a whole entry or none, even when a model server is killed mid-write or two
start at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onemodel.boundary.contract import Agreement

logger = logging.getLogger(__name__)

# Bump when the entry layout or the conversion changes: old entries then miss.
CACHE_FORMAT = 1
_MODEL_XML = "model.xml"
_METADATA = "metadata.json"
_DIGESTS = "digests.json"
_CHUNK_BYTES = 4 * 1024 * 1024
# A staging directory this old was left by a writer that died (kill -9 mid-write).
_STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class CacheMetadata:
    """What a warm start needs besides the IR: it must not import TensorFlow to learn it."""

    key: str
    source: str  # what the entry was made from, e.g. "vgg16 weights=random" or a file path
    name: str
    input_size: tuple[int, int]
    num_classes: int
    preprocess_mode: str
    precision: str
    openvino_version: str
    agreement: Agreement  # int8: on the held-out calibration images
    # int8 only: how NNCF quantized it, and every attempt with its measured agreement.
    quantization: str = ""
    quantization_summary: str = ""

    def to_json(self) -> str:
        """Return the metadata as JSON text."""
        return json.dumps({"format": CACHE_FORMAT, **dataclasses.asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> CacheMetadata:
        """Parse metadata written by ``to_json``; raise ValueError if it does not fit."""
        data = json.loads(text)
        if data.pop("format", None) != CACHE_FORMAT:
            raise ValueError("another cache format")
        try:
            height, width = data.pop("input_size")
            agreement = Agreement(**data.pop("agreement"))
            return cls(input_size=(int(height), int(width)), agreement=agreement, **data)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"malformed metadata: {error}") from None


@dataclass(frozen=True)
class CacheEntry:
    """A converted model found in the cache."""

    xml_path: Path
    metadata: CacheMetadata


def cache_key(source_digest: str, preprocess_mode: str, precision: str, engine_version: str) -> str:
    """Return the key of a converted model: its content, preprocessing, precision, engine."""
    text = "\n".join(
        [f"format={CACHE_FORMAT}", source_digest, preprocess_mode, precision, engine_version]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ModelCache:
    """Converted models under one root directory (MODEL_CACHE_DIR)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries = root / "openvino"

    def lookup(self, key: str) -> CacheEntry | None:
        """Return the entry for ``key``, or None if there is none (or it is unreadable)."""
        directory = self._entries / key
        try:
            metadata = CacheMetadata.from_json((directory / _METADATA).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("ignoring the unreadable cache entry %s: %s", directory, error)
            return None
        if metadata.key != key or not (directory / _MODEL_XML).is_file():
            logger.warning("ignoring the inconsistent cache entry %s", directory)
            return None
        return CacheEntry(directory / _MODEL_XML, metadata)

    def store(self, metadata: CacheMetadata, write_model: Callable[[Path], None]) -> Path:
        """Write an entry atomically (``write_model`` writes the IR to the path given).

        Entries for the same source and precision under other keys (an older model file,
        another OpenVINO) are removed afterwards: they can never be hit again. So are
        staging directories older than an hour (their writer died).
        """
        self._entries.mkdir(parents=True, exist_ok=True)
        final = self._entries / metadata.key
        staging = Path(tempfile.mkdtemp(prefix=f".{metadata.key}.", dir=self._entries))
        try:
            write_model(staging / _MODEL_XML)
            (staging / _METADATA).write_text(metadata.to_json())
            if final.exists():  # unreadable or left by a racing writer: replace it
                shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._remove_superseded(metadata)
        return final

    def digest(self, path: Path) -> str:
        """Return the SHA-256 of a file's content, remembered while its size and mtime hold.

        Hashing VGG16's 528 MB weights takes seconds; a warm start should not pay that.
        """
        resolved = path.resolve()
        stat = resolved.stat()
        # No inode: an image layer may show the same file under another one at run time.
        stamp = [stat.st_size, stat.st_mtime_ns]
        memo = self._read_digests()
        known = memo.get(str(resolved))
        if isinstance(known, dict) and known.get("stamp") == stamp:
            return str(known["sha256"])
        sha = hashlib.sha256()
        with resolved.open("rb") as file:
            while chunk := file.read(_CHUNK_BYTES):
                sha.update(chunk)
        memo[str(resolved)] = {"stamp": stamp, "sha256": sha.hexdigest()}
        self._write_digests(memo)
        return sha.hexdigest()

    def _remove_superseded(self, metadata: CacheMetadata) -> None:
        now = time.time()
        for directory in self._entries.iterdir():
            if directory.name.startswith("."):
                with contextlib.suppress(OSError):
                    if now - directory.stat().st_mtime > _STALE_STAGING_S:
                        shutil.rmtree(directory, ignore_errors=True)
                continue
            if directory.name == metadata.key:
                continue
            entry = self.lookup(directory.name)
            if (
                entry is not None
                and entry.metadata.source == metadata.source
                and entry.metadata.precision == metadata.precision
            ):
                logger.info("removing the superseded cache entry %s", directory)
                shutil.rmtree(directory, ignore_errors=True)

    def _read_digests(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / _DIGESTS).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_digests(self, memo: dict[str, Any]) -> None:
        # Best effort: a read-only cache still works, it only hashes again next time.
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            fd, staging = tempfile.mkstemp(prefix=".digests.", dir=self.root)
            with os.fdopen(fd, "w") as file:
                json.dump(memo, file)
            os.replace(staging, self.root / _DIGESTS)
