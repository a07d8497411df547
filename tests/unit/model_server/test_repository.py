"""The model repository: layouts, version choice, settings per version, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from onemodel.errors import ConfigError
from onemodel.model_server.repository import ModelRepository, open_repository
from onemodel.settings import Settings


def _version(root: Path, number: str, *files: str, config: str | None = None) -> Path:
    directory = root / number
    directory.mkdir(parents=True)
    for name in files:
        (directory / name).write_bytes(b"model bytes of " + name.encode())
    if config is not None:
        (directory / "config.json").write_text(config)
    return directory


def _open(path: Path | str, **changes: object) -> ModelRepository:
    return open_repository(Settings(model_path=str(path)).replace(**changes))


def test_vgg16_and_a_single_file_are_version_1(tmp_path: Path) -> None:
    vgg16 = _open("vgg16")
    assert (vgg16.name, vgg16.is_directory) == ("vgg16", False)
    assert [version.version for version in vgg16.scan().versions] == ["1"]
    single = _open(tmp_path / "tiny.keras")
    assert single.name == "tiny"
    (version,) = single.scan().versions
    assert (version.number, version.model_path) == (1, str(tmp_path / "tiny.keras"))


def test_a_single_file_cannot_pin_another_version(tmp_path: Path) -> None:
    assert _open(tmp_path / "tiny.keras", model_version=1).name == "tiny"
    with pytest.raises(ConfigError, match="MODEL_VERSION=2 but MODEL_PATH="):
        _open(tmp_path / "tiny.keras", model_version=2)


def test_a_repository_lists_numeric_versions_with_labels_and_settings(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    _version(root, "1", "model.keras")
    two = _version(root, "2", "model.h5", "labels.txt", config='{"preprocess": "tf"}')
    _version(root, "10", "model.keras")
    (root / ".tmp-11").mkdir()  # being copied: ignored
    (root / "README").write_text("notes")
    repository = _open(root)
    assert (repository.name, repository.is_directory) == ("flowers", True)
    scan = repository.scan()
    assert scan.numbers() == (1, 2, 10)  # numeric order, not text order
    version = scan.find(2)
    assert version is not None
    assert version.model_path == str(two / "model.h5")
    assert version.labels_path == str(two / "labels.txt")
    assert version.preprocess == "tf"
    chosen = version.settings_for(Settings(model_path=str(root), preprocess="caffe"))
    assert (chosen.model_path, chosen.preprocess_mode) == (str(two / "model.h5"), "tf")
    assert chosen.labels_path == str(two / "labels.txt")
    plain = scan.find(1)
    assert plain is not None and plain.settings_for(Settings()).preprocess_mode == "none"


def test_candidates_are_highest_first_or_the_pinned_one(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for number in ("1", "3", "2"):
        _version(root, number, "model.keras")
    repository = _open(root)
    scan = repository.scan()
    assert [version.number for version in repository.candidates(scan, None)] == [3, 2, 1]
    assert [version.number for version in repository.candidates(scan, 2)] == [2]
    assert repository.candidates(scan, 7) == []


def test_bad_versions_are_problems_not_crashes(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _version(root, "1", "model.keras")
    _version(root, "2")  # empty
    _version(root, "3", "a.keras", "b.h5")
    _version(root, "4", "model.keras", config="{not json")
    _version(root, "5", "model.keras", config='{"preprocess": "imagenet"}')
    _version(root, "6", "model.keras", config='{"labels": "x.txt"}')
    _version(root, "07", "model.keras")
    scan = _open(root).scan()
    assert scan.numbers() == (1,)
    assert "no .keras or .h5 model file" in scan.problems[2]
    assert "2 model files (a.keras, b.h5); keep exactly one" in scan.problems[3]
    assert "not a readable JSON object" in scan.problems[4]
    assert "preprocess='imagenet' is not one of" in scan.problems[5]
    assert "unknown settings labels" in scan.problems[6]
    assert "write the version as 7" in scan.problems[7]


def test_a_rewritten_version_has_a_new_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "m"
    directory = _version(root, "1", "model.keras")
    repository = _open(root)
    before = repository.scan().versions[0].fingerprint
    (directory / "model.keras").write_bytes(b"a different, longer model file")
    assert repository.scan().versions[0].fingerprint != before


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("empty", "a directory without version directories"),
        ("loose", "found model.keras: move it into"),
        ("only_bad", "has no usable version (1: "),
    ],
)
def test_unusable_layouts_fail_at_start_with_a_clear_error(
    tmp_path: Path, layout: str, message: str
) -> None:
    root = tmp_path / "m"
    root.mkdir()
    if layout == "loose":
        (root / "model.keras").write_bytes(b"x")
    if layout == "only_bad":
        _version(root, "1")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _open(root)


def test_a_pinned_version_must_exist(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _version(root, "1", "model.keras")
    _version(root, "2")
    assert _open(root, model_version=1).name == "m"
    with pytest.raises(ConfigError, match=r"MODEL_VERSION=3: no such version directory \(versions"):
        _open(root, model_version=3)
    with pytest.raises(ConfigError, match=r"MODEL_VERSION=2: .*no \.keras or \.h5 model file"):
        _open(root, model_version=2)


def test_version_settings_from_the_environment() -> None:
    settings = Settings.from_env({"MODEL_VERSION": "3", "MODEL_POLL_S": "0"})
    assert (settings.model_version, settings.model_poll_s) == (3, 0.0)
    defaults = Settings.from_env({})
    assert (defaults.model_version, defaults.model_poll_s) == (None, 30.0)
    for name, value in (("MODEL_VERSION", "0"), ("MODEL_VERSION", "x"), ("MODEL_POLL_S", "-1")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
