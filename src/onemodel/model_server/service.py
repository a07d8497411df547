"""The ONE shared object: every manager client of the model server reaches this instance."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from onemodel.boundary.contract import ModelInfo
from onemodel.errors import (
    InferenceTimeoutError,
    InvalidRequestError,
    ModelChangedError,
    ModelServerStoppingError,
    ModelUnavailableError,
    OverloadedError,
    PayloadTooLargeError,
)
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.metrics import ServerMetrics

# After the last prediction returned, time for its manager thread to write the reply.
_REPLY_FLUSH_S = 0.2


class ModelService:
    """The shared model service; satisfies ``boundary.contract.ModelBackend``."""

    def __init__(
        self,
        describe: Callable[[], Mapping[str, Any]] | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._metrics = metrics or ServerMetrics()
        self._started_at = time.monotonic()
        self._lock = threading.Lock()
        self._batcher: Batcher | None = None
        # What the loaded model and this process's settings decided (state fields aside).
        self._model = ModelInfo(state="loading", reason="the model is loading")
        self._state = "loading"
        self._reason = "the model is loading"
        self._load_count = 0
        self._images_served = 0
        self._in_progress = 0
        # Signalled when a prediction ends: drain() waits for none, retire() for a batcher's.
        self._idle = threading.Condition(self._lock)
        # Predictions in progress per batcher: a replaced batcher stops when its count is 0.
        self._users: dict[Batcher, int] = {}
        self._versions: tuple[str, ...] = ()
        self._last_error = ""
        self._describe = describe
        # Lets clients check that they all reach this one object.
        self._instance = uuid.uuid4().hex

    def set_ready(self, batcher: Batcher, model: ModelInfo) -> Batcher | None:
        """Start answering predictions with this batcher (call after warm-up).

        ``model`` carries the model's name, version, input size, labels and this server's
        limits. Returns the batcher it replaces (None at first): predictions already given
        to it finish on it; ``retire`` then stops it.
        """
        with self._lock:
            previous = self._batcher
            self._batcher = batcher
            self._model = model
            self._load_count += 1
            self._metrics.model_loads.inc()
            self._metrics.served_version = model.version
            self._metrics.set_queue_depth(lambda: batcher.queued_images)
            self._state = "ready"
            self._reason = ""
        return previous

    def retire(self, batcher: Batcher, timeout_s: float) -> bool:
        """Wait until no prediction uses a replaced batcher, then stop it; return if all did."""
        with self._idle:
            finished = self._idle.wait_for(
                lambda: self._users.get(batcher, 0) == 0, timeout=timeout_s
            )
        batcher.stop()
        return finished

    def set_versions(self, versions: tuple[str, ...], last_error: str) -> None:
        """Report the repository's versions and the latest load failure ("" for none)."""
        with self._lock:
            self._versions = versions
            self._last_error = last_error

    def set_failed(self, reason: str) -> None:
        """Report that the model could not be loaded."""
        with self._lock:
            self._state = "failed"
            self._reason = reason

    def set_stopping(self) -> None:
        """Refuse new predictions (clients try another replica); accepted ones finish."""
        with self._lock:
            self._state = "stopping"
            self._reason = "the model server is shutting down"

    def drain(self, timeout_s: float) -> bool:
        """Refuse new predictions, answer every queued and running one; return if all were.

        Until it returns, ``info`` keeps answering (state "stopping"), so pools move away.
        """
        deadline = time.monotonic() + timeout_s
        self.set_stopping()
        batcher = self._batcher
        drained = batcher.drain(timeout_s) if batcher is not None else True
        with self._idle:
            idle = self._idle.wait_for(
                lambda: self._in_progress == 0, max(deadline - time.monotonic(), 0.0)
            )
        if drained and idle:
            time.sleep(_REPLY_FLUSH_S)
        return drained and idle

    def predict(
        self, images: np.ndarray, timeout_s: float, version: str | None = None
    ) -> np.ndarray:
        """Return class scores (N, classes) float32 for RGB uint8 images (N, H, W, 3).

        With ``version``, only that version may compute them (else ModelChangedError): the
        caller prepared the images for its input size and will label them with its labels.
        """
        with self._lock:
            batcher, model = self._batcher, self._model
            if self._state == "stopping":
                raise ModelServerStoppingError()
            if self._state != "ready" or batcher is None:
                raise ModelUnavailableError(self._reason or "the model is not ready")
            if version is not None and version != model.version:
                raise ModelChangedError(
                    f"version {version} of {model.name!r} is no longer served; "
                    f"version {model.version} is"
                )
            self._in_progress += 1
            self._users[batcher] = self._users.get(batcher, 0) + 1
        try:
            return self._predict(batcher, model, images, timeout_s)
        finally:
            with self._idle:
                self._in_progress -= 1
                self._users[batcher] -= 1
                if not self._users[batcher]:
                    del self._users[batcher]
                self._idle.notify_all()

    def _predict(
        self, batcher: Batcher, model: ModelInfo, images: np.ndarray, timeout_s: float
    ) -> np.ndarray:
        self._check_images(images, model)
        try:
            future = batcher.submit(images, timeout_s)
        except OverloadedError:
            self._metrics.refused.labels("overloaded").inc()
            raise
        try:
            scores = future.result(timeout=timeout_s)
        except (TimeoutError, InferenceTimeoutError):
            future.cancel()
            self._metrics.refused.labels("timeout").inc()
            raise InferenceTimeoutError(
                f"the prediction did not finish within {timeout_s:g} s"
            ) from None
        with self._lock:
            self._images_served += int(images.shape[0])
        return scores

    def info(self) -> ModelInfo:
        """Return readiness, model details and limits."""
        with self._lock:
            info = dataclasses.replace(
                self._model,
                state=self._state,
                reason=self._reason,
                pid=os.getpid(),
                uptime_s=round(time.monotonic() - self._started_at, 3),
                load_count=self._load_count,
                instance=self._instance,
                images_served=self._images_served,
                versions=self._versions,
                last_error=self._last_error,
            )
        if self._batcher is not None:
            info = dataclasses.replace(info, queued_images=self._batcher.queued_images)
        if self._describe is not None:
            info = dataclasses.replace(info, extra=dict(self._describe()))
        return info

    def metrics_text(self) -> bytes:
        """Return this server's Prometheus exposition text."""
        return self._metrics.render()

    def _check_images(self, images: Any, model: ModelInfo) -> None:
        height, width = model.input_size
        if (
            not isinstance(images, np.ndarray)
            or images.dtype != np.uint8
            or images.ndim != 4
            or images.shape[0] < 1
            or images.shape[1:] != (height, width, 3)
        ):
            shape = getattr(images, "shape", None)
            dtype = getattr(images, "dtype", type(images).__name__)
            raise InvalidRequestError(
                f"expected uint8 images of shape (N, {height}, {width}, 3); got {dtype} {shape}"
            )
        limit = model.max_batch_size
        if images.shape[0] > limit:
            # One call is one batch: the model never sees more than MAX_BATCH_SIZE at once.
            raise PayloadTooLargeError(
                f"the request has {images.shape[0]} images; this model server takes at most "
                f"{limit} per request (its MAX_BATCH_SIZE)"
            )
