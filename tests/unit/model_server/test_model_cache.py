"""The converted-model cache: keys, atomic entries, content digests, superseded entries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from onemodel.boundary.contract import Agreement
from onemodel.model_server.model_cache import CacheMetadata, ModelCache, cache_key


def _metadata(
    key: str, source: str = "/models/a.keras", precision: str = "float32"
) -> CacheMetadata:
    return CacheMetadata(
        key=key,
        source=source,
        name="a",
        input_size=(64, 48),
        num_classes=10,
        preprocess_mode="none",
        precision=precision,
        openvino_version="2026.4.1",
        agreement=Agreement(images=4, top1=1.0, max_abs_diff=2e-8),
    )


def _write_ir(xml: Path) -> None:
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(b"\0" * 16)


def test_every_part_of_the_key_counts() -> None:
    base = cache_key("sha256=aa", "none", "float32", "2026.4.1")
    assert base == cache_key("sha256=aa", "none", "float32", "2026.4.1")
    others = {
        cache_key("sha256=ab", "none", "float32", "2026.4.1"),
        cache_key("sha256=aa", "caffe", "float32", "2026.4.1"),
        cache_key("sha256=aa", "none", "bfloat16", "2026.4.1"),
        cache_key("sha256=aa", "none", "float32", "2026.5.0"),
    }
    assert base not in others
    assert len(others) == 4


def test_a_stored_entry_is_found_with_its_metadata(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    assert cache.lookup("k1") is None
    cache.store(_metadata("k1"), _write_ir)
    entry = cache.lookup("k1")
    assert entry is not None
    assert entry.xml_path.read_text() == "<net/>"
    assert entry.metadata == _metadata("k1")
    assert entry.metadata.input_size == (64, 48)


def test_a_failed_write_leaves_no_entry_and_no_staging_directory(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)

    def fail(xml: Path) -> None:
        xml.write_text("<half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache.store(_metadata("k1"), fail)
    assert cache.lookup("k1") is None
    assert list((tmp_path / "openvino").iterdir()) == []


def test_unreadable_metadata_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    cache.store(_metadata("k1"), _write_ir)
    (tmp_path / "openvino" / "k1" / "metadata.json").write_text("{not json")
    assert cache.lookup("k1") is None
    cache.store(_metadata("k1"), _write_ir)
    assert cache.lookup("k1") is not None


def test_metadata_of_another_cache_format_is_a_miss(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    cache.store(_metadata("k1"), _write_ir)
    path = tmp_path / "openvino" / "k1" / "metadata.json"
    data = json.loads(path.read_text())
    data["format"] = -1
    path.write_text(json.dumps(data))
    assert cache.lookup("k1") is None


def test_a_new_entry_for_the_same_source_removes_the_old_one(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    cache.store(_metadata("old"), _write_ir)
    cache.store(_metadata("other", source="/models/b.keras"), _write_ir)
    cache.store(_metadata("half", precision="bfloat16"), _write_ir)
    cache.store(_metadata("new"), _write_ir)
    assert cache.lookup("old") is None
    assert cache.lookup("new") is not None
    assert cache.lookup("other") is not None
    assert cache.lookup("half") is not None


def test_the_digest_follows_the_file_content(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    model = tmp_path / "model.keras"
    model.write_bytes(b"first")
    first = cache.digest(model)
    assert first == cache.digest(model)
    model.write_bytes(b"second, longer")
    assert cache.digest(model) != first


def test_the_digest_is_remembered_while_size_and_mtime_hold(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    model = tmp_path / "model.keras"
    model.write_bytes(b"AAAA")
    remembered = cache.digest(model)
    stat = model.stat()
    # Same size, same mtime: not read again (this is what makes warm starts fast) ...
    model.write_bytes(b"BBBB")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.digest(model) == remembered
    # ... any other change of the stamp reads the content again.
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.digest(model) != remembered


def test_a_read_only_cache_still_digests(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "missing" / "cache")
    (tmp_path / "missing").write_text("a file where a directory should be")
    model = tmp_path / "model.keras"
    model.write_bytes(b"content")
    assert len(cache.digest(model)) == 64


def test_a_dead_writers_staging_directory_is_removed_later(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    cache.store(_metadata("k1"), _write_ir)
    stale = tmp_path / "openvino" / ".k2.dead"
    fresh = tmp_path / "openvino" / ".k3.writing"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (0, 0))
    cache.store(_metadata("k4", source="/models/other.keras"), _write_ir)
    assert not stale.exists()
    assert fresh.exists()  # perhaps another model server writing right now
