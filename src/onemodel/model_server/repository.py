"""The model repository: which versions MODEL_PATH offers, read from disk (no TensorFlow).

``MODEL_PATH`` is one of:

- ``vgg16`` or a single ``.keras``/``.h5`` file: one model, version 1, as before;
- a directory ``<name>/`` holding numeric version directories ``<name>/<version>/``, each
  with exactly one ``.keras`` or ``.h5`` file, optionally ``labels.txt`` (one class name a
  line) and ``config.json`` (``{"preprocess": "tf"}``: this version's preprocessing). The
  model's name is the directory's name. Other entries (``.tmp-3``, ``README``) are ignored,
  so a version can be copied under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onemodel.errors import ConfigError
from onemodel.settings import PREPROCESS_MODES, Settings

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
LABELS_FILE = "labels.txt"
SETTINGS_FILE = "config.json"
SETTINGS_KEYS = ("preprocess",)
SINGLE_VERSION = 1

_VERSION_NAME = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ModelVersion:
    """One version a model server can load: its model file, labels and preprocessing."""

    number: int
    model_path: str  # a model file, or "vgg16"
    labels_path: str | None = None
    preprocess: str | None = None
    # (file name, size, mtime_ns) of the version's files: a rewritten version differs.
    fingerprint: tuple[tuple[str, int, int], ...] = ()

    @property
    def version(self) -> str:
        """Return the version as the APIs spell it."""
        return str(self.number)

    def settings_for(self, settings: Settings) -> Settings:
        """Return the settings that load this version (its own labels and preprocessing win)."""
        return settings.replace(
            model_path=self.model_path,
            labels_path=self.labels_path or settings.labels_path,
            preprocess=self.preprocess or settings.preprocess,
        )


@dataclass(frozen=True)
class Scan:
    """What one look at the repository found."""

    versions: tuple[ModelVersion, ...] = ()  # well-formed versions, lowest first
    problems: Mapping[int, str] = field(default_factory=dict)  # version -> what is wrong

    def numbers(self) -> tuple[int, ...]:
        """Return the well-formed version numbers, lowest first."""
        return tuple(version.number for version in self.versions)

    def find(self, number: int) -> ModelVersion | None:
        """Return the well-formed version with this number, if there is one."""
        return next((version for version in self.versions if version.number == number), None)


@dataclass(frozen=True)
class ModelRepository:
    """Where a model's versions live: a repository directory, or one model (version 1)."""

    name: str
    root: Path | None = None  # None: a single model file or vgg16
    single: ModelVersion | None = None

    @property
    def is_directory(self) -> bool:
        """Return whether versions can come and go (a repository directory)."""
        return self.root is not None

    def scan(self) -> Scan:
        """Return the versions on disk now; a bad version is a problem, not an exception."""
        if self.root is None:
            assert self.single is not None
            return Scan(versions=(self.single,))
        try:
            entries = sorted(self.root.iterdir())
        except OSError as error:
            # The directory vanished or is unreadable: nothing new to serve.
            return Scan(problems={0: f"cannot read {self.root}: {error.strerror}"})
        versions: list[ModelVersion] = []
        problems: dict[int, str] = {}
        for entry in entries:
            if not _VERSION_NAME.fullmatch(entry.name) or not entry.is_dir():
                continue
            number = int(entry.name)
            if entry.name != str(number):
                problems[number] = f"{entry}: write the version as {number}, without zeros"
                continue
            try:
                versions.append(read_version(entry, number))
            except ConfigError as error:
                problems[number] = error.message
            except OSError as error:  # removed or rewritten while we looked
                problems[number] = f"{entry}: {error.strerror}"
        versions.sort(key=lambda version: version.number)
        return Scan(versions=tuple(versions), problems=problems)

    def candidates(self, scan: Scan, pinned: int | None) -> list[ModelVersion]:
        """Return the versions to try, best first: the pinned one, or highest first."""
        if pinned is not None:
            version = scan.find(pinned)
            return [version] if version is not None else []
        return sorted(scan.versions, key=lambda version: version.number, reverse=True)


def open_repository(settings: Settings) -> ModelRepository:
    """Return the repository MODEL_PATH names; raise ConfigError for a layout we cannot use."""
    path_text = settings.model_path
    path = Path(path_text)
    if path_text == "vgg16" or not path.is_dir():
        # A single model: its file is checked by the loader, as before.
        name = "vgg16" if path_text == "vgg16" else path.stem
        if settings.model_version not in (None, SINGLE_VERSION):
            raise ConfigError(
                f"MODEL_VERSION={settings.model_version} but MODEL_PATH={path_text!r} is one "
                f"model, version {SINGLE_VERSION}; point MODEL_PATH at a repository directory "
                "(<name>/<version>/model.keras) to choose among versions"
            )
        return ModelRepository(name=name, single=ModelVersion(SINGLE_VERSION, path_text))
    repository = ModelRepository(name=path.resolve().name, root=path)
    scan = repository.scan()
    if not scan.versions and not scan.problems:
        loose = sorted(child.name for child in path.iterdir() if _is_model_file(child))
        hint = f" (found {', '.join(loose)}: move it into {path}/1/)" if loose else ""
        raise ConfigError(
            f"MODEL_PATH={path_text!r} is a directory without version directories: expected "
            f"{path}/<version>/model.keras with numeric versions, e.g. {path}/1/{hint}"
        )
    if not scan.versions:
        details = "; ".join(f"{number}: {text}" for number, text in sorted(scan.problems.items()))
        raise ConfigError(f"MODEL_PATH={path_text!r} has no usable version ({details})")
    pinned = settings.model_version
    if pinned is not None and scan.find(pinned) is None:
        reason = scan.problems.get(pinned, "no such version directory")
        raise ConfigError(
            f"MODEL_VERSION={pinned}: {reason} (versions in {path}: "
            f"{', '.join(str(number) for number in scan.numbers()) or 'none'})"
        )
    return repository


def read_version(directory: Path, number: int) -> ModelVersion:
    """Describe one version directory; raise ConfigError naming what is wrong with it."""
    files = sorted(child for child in directory.iterdir() if child.is_file())
    models = [child for child in files if _is_model_file(child)]
    if not models:
        raise ConfigError(f"{directory}: no .keras or .h5 model file")
    if len(models) > 1:
        names = ", ".join(model.name for model in models)
        raise ConfigError(f"{directory}: {len(models)} model files ({names}); keep exactly one")
    labels = directory / LABELS_FILE
    return ModelVersion(
        number=number,
        model_path=str(models[0]),
        labels_path=str(labels) if labels.is_file() else None,
        preprocess=_read_preprocess(directory / SETTINGS_FILE),
        fingerprint=tuple(_stat(child) for child in files),
    )


def _read_preprocess(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON object ({error})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f'{path}: expected a JSON object such as {{"preprocess": "tf"}}')
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown settings {', '.join(unknown)} (known: {', '.join(SETTINGS_KEYS)})"
        )
    mode = settings.get("preprocess")
    if mode is not None and mode not in PREPROCESS_MODES:
        raise ConfigError(
            f"{path}: preprocess={mode!r} is not one of {', '.join(PREPROCESS_MODES)}"
        )
    return mode


def _is_model_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(MODEL_FILE_SUFFIXES)


def _stat(path: Path) -> tuple[str, int, int]:
    status = path.stat()
    return (path.name, status.st_size, status.st_mtime_ns)
