"""Model versions: load a new one beside the served one, swap it in, release the old one.

The watcher looks at the repository every ``MODEL_POLL_S`` seconds and when woken (SIGHUP).
The best version is the highest well-formed one (or the pinned ``MODEL_VERSION``) that loads
and warms up. A new best version is loaded and warmed while the current one keeps serving;
then the service switches to it between batches: predictions already given to the old
batcher finish on it, and it is stopped and released once none is left. A version that
fails is logged, reported as ``last_error`` and skipped until its files change; removing
the served version falls back to the best remaining one.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Callable

import numpy as np

from onemodel.boundary.contract import ModelInfo
from onemodel.errors import ModelLoadError, OneModelError
from onemodel.memory import release_free_memory
from onemodel.model_server.batcher import Batcher, BatchRecord
from onemodel.model_server.labels import load_labels
from onemodel.model_server.metrics import ServerMetrics
from onemodel.model_server.repository import ModelRepository, ModelVersion, Scan
from onemodel.model_server.service import ModelService
from onemodel.settings import Settings

logger = logging.getLogger(__name__)

# Loads and warms one version: a started batcher and what it serves (name/version aside).
Loader = Callable[[ModelVersion], tuple[Batcher, ModelInfo]]


class VersionWatcher:
    """Keep the service on the best version of a model repository."""

    def __init__(
        self,
        service: ModelService,
        repository: ModelRepository,
        load: Loader,
        *,
        pinned: int | None = None,
        poll_s: float = 30.0,
        retire_timeout_s: float = 60.0,
        metrics: ServerMetrics | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self._service = service
        self._repository = repository
        self._load = load
        self._pinned = pinned
        self._poll_s = poll_s
        self._retire_timeout_s = retire_timeout_s
        self._metrics = metrics
        self._served: ModelVersion | None = None
        self.batcher: Batcher | None = None  # the batcher serving now
        # Versions that failed to load, with the files they had then: retried when changed.
        self._failed: dict[int, tuple[tuple[tuple[str, int, int], ...], str]] = {}
        self._reported: set[tuple[int, str]] = set()
        self._refreshing = threading.RLock()  # one load at a time
        self._wake = wake or threading.Event()  # set: look now (e.g. by a SIGHUP handler)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def served_version(self) -> str:
        """Return the version serving now ("" before the first one loaded)."""
        return self._served.version if self._served is not None else ""

    def load_initial(self) -> bool:
        """Serve the best version that loads; return False (service failed) if none does."""
        self.refresh()
        if self._served is None:
            reasons = [reason for _, reason in self._failed.values()]
            self._service.set_failed("; ".join(reasons) or "no model version could be loaded")
            return False
        return True

    def refresh(self) -> bool:
        """Look at the repository once; swap in a better version if one loads. Return if so."""
        with self._refreshing:
            scan = self._repository.scan()
            self._log_problems(scan)
            swapped = False
            for version in self._repository.candidates(scan, self._pinned):
                if self._served is not None and version.number == self._served.number:
                    break  # nothing better than what serves
                failed = self._failed.get(version.number)
                if failed is not None and failed[0] == version.fingerprint:
                    continue
                if self._swap_to(version):
                    swapped = True
                    break
            if self._served is not None and scan.find(self._served.number) is None:
                self._note_once(
                    self._served.number,
                    f"version {self._served.version} was removed from the repository and no "
                    "other version loads: it keeps serving from memory",
                )
            self._service.set_versions(
                tuple(version.version for version in scan.versions), self._last_error(scan)
            )
            return swapped

    def start(self) -> None:
        """Watch the repository in a thread (polling if MODEL_POLL_S > 0, and on wake())."""
        if not self._repository.is_directory:
            return  # a single model file has no other versions
        self._thread = threading.Thread(target=self._run, name="model-versions", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for new versions now (SIGHUP); safe to call from a signal handler."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching (a load in progress finishes first, within timeout_s)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s if self._poll_s > 0 else None)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.refresh()
            except Exception:  # keep watching: the served version is unaffected
                logger.exception("looking for new model versions failed")

    def swap_to(self, version: ModelVersion) -> bool:
        """Load and warm a version beside the served one and swap to it; return if it did."""
        with self._refreshing:
            return self._swap_to(version)

    def _swap_to(self, version: ModelVersion) -> bool:
        name = self._repository.name
        logger.info("loading %s version %s (%s)", name, version.version, version.model_path)
        try:
            batcher, info = self._load(version)
        except OneModelError as error:
            return self._fail(version, error.message)
        except Exception as error:  # a broken file can make Keras raise anything
            logger.exception("loading version %s failed", version.version)
            return self._fail(version, f"{type(error).__name__}: {error}")
        info = dataclasses.replace(info, name=name, version=version.version)
        previous = self._service.set_ready(batcher, info)
        served_before = self._served
        self._served, self.batcher = version, batcher
        self._failed.pop(version.number, None)
        logger.info(
            "model %s version %s serves%s on %s: input %dx%d, %d classes, preprocess %s, "
            "precision %s",
            name,
            version.version,
            f" (was version {served_before.version})" if served_before is not None else "",
            info.engine or "tensorflow",
            info.input_size[0],
            info.input_size[1],
            info.num_classes,
            info.preprocess,
            info.precision,
        )
        del batcher, info
        if previous is not None:
            if self._metrics is not None:
                self._metrics.model_swaps.inc()
            old = served_before.version if served_before is not None else "?"
            if not self._service.retire(previous, self._retire_timeout_s):
                logger.warning(
                    "version %s still had predictions after %g s; they were failed",
                    old,
                    self._retire_timeout_s,
                )
            # The last reference to the old model: its tensors are garbage from here on, so
            # collect them and give their memory back to the system.
            del previous
            gc.collect()
            release_free_memory()
            logger.info("released version %s", old)
        return True

    def _fail(self, version: ModelVersion, reason: str) -> bool:
        # A single model file has one version: its error needs no version in front.
        directory = self._repository.is_directory
        message = f"version {version.version}: {reason}" if directory else reason
        if directory:
            logger.error(
                "%s version %s is skipped: %s", self._repository.name, version.version, reason
            )
        else:
            logger.error("%s", reason)
        self._failed[version.number] = (version.fingerprint, message)
        if self._metrics is not None:
            self._metrics.version_failures.inc()
        return False

    def _last_error(self, scan: Scan) -> str:
        """Return why the newest version newer than the served one does not serve ("")."""
        served = self._served.number if self._served is not None else -1
        errors = {
            number: message
            for number, (fingerprint, message) in self._failed.items()
            if number > served
            and (found := scan.find(number)) is not None
            and found.fingerprint == fingerprint
        }
        errors.update(
            (number, f"version {number}: {problem}")
            for number, problem in scan.problems.items()
            if number > served
        )
        if self._pinned is not None:
            errors = {number: text for number, text in errors.items() if number == self._pinned}
        return errors[max(errors)] if errors else ""

    def _log_problems(self, scan: Scan) -> None:
        for number, problem in sorted(scan.problems.items()):
            self._note_once(number, f"version {number} is skipped: {problem}")

    def _note_once(self, number: int, message: str) -> None:
        if (number, message) not in self._reported:
            self._reported.add((number, message))
            logger.warning("%s: %s", self._repository.name, message)


def load_version(
    settings: Settings,
    version: ModelVersion,
    on_batch: Callable[[BatchRecord], None] | None,
    cpu_bfloat16: tuple[str, ...] = (),
) -> tuple[Batcher, ModelInfo]:
    """Load and warm one version on its engine; return its started batcher and its info."""
    # Imported here: only the model server process may load TensorFlow or OpenVINO.
    from onemodel.model_server.loading import load_for_serving  # noqa: PLC0415

    chosen = version.settings_for(settings)
    classifier = load_for_serving(chosen)
    labels = load_labels(chosen.labels_path, classifier.num_classes)
    height, width = classifier.input_size
    warm = classifier.predict(np.zeros((1, height, width, 3), dtype=np.uint8))
    if warm.shape != (1, classifier.num_classes):
        raise ModelLoadError(f"warm-up returned shape {warm.shape}")
    batcher = Batcher(
        classifier.predict,
        max_batch_size=settings.max_batch_size,
        max_delay_ms=settings.max_batch_delay_ms,
        max_queue=settings.max_queue,
        on_batch=on_batch,
    )
    batcher.start()
    info = ModelInfo(
        state="ready",
        name=classifier.name,
        version=version.version,
        input_size=classifier.input_size,
        labels=tuple(labels),
        max_batch_size=settings.max_batch_size,
        preprocess=classifier.preprocess_mode,
        precision=classifier.precision,
        engine=classifier.engine.name,
        engine_reason=classifier.engine_reason,
        agreement=classifier.agreement,
        model_cache=classifier.cache,
        cpu_bfloat16=cpu_bfloat16,
        max_batch_delay_ms=settings.max_batch_delay_ms,
        max_queue=settings.max_queue,
    )
    return batcher, info
