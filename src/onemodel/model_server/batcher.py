"""Dynamic batching: gather concurrent predictions into one model call, with bounds."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from onemodel.errors import (
    InferenceError,
    InferenceTimeoutError,
    ModelServerStoppingError,
    ModelUnavailableError,
    OverloadedError,
)

logger = logging.getLogger(__name__)

PredictBatch = Callable[[np.ndarray], np.ndarray]


@dataclass
class _Job:
    images: np.ndarray
    enqueued_at: float
    deadline: float
    future: Future[np.ndarray] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class BatchRecord:
    """What one model call did: for metrics and tests."""

    size: int
    requests: int
    queue_wait_s: float
    inference_s: float
    failed: bool


class Batcher:
    """Run ``predict_batch`` on batches formed from concurrently submitted image arrays.

    A batch takes everything already queued, up to ``max_batch_size`` images. It then waits
    for more only while it is smaller than the number of callers recently active (the
    previous batch plus what queued while it ran), and at most ``max_delay_ms`` counted from
    when the model became free (or from the first request's arrival, if later). So a lone
    request on an idle model runs at once, while under steady load a batch waits a few
    milliseconds for the callers the previous batch just answered, and two half batches
    that formed while the model was busy merge back into one. The queue holds at most
    ``max_queue`` images; beyond that ``submit`` refuses at once with OverloadedError.
    """

    def __init__(
        self,
        predict_batch: PredictBatch,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self._predict_batch = predict_batch
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_ms / 1000.0
        self._max_queue = max_queue
        self._clock = clock
        self._on_batch = on_batch
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_images = 0
        # Callers seen in the last round (batch + queued meanwhile) and when the model freed.
        self._expected_callers = 1
        self._free_since = float("-inf")
        self._condition = threading.Condition()
        self._draining = False  # refuse new work, finish the queue
        self._stopping = False  # leave the loop
        self._running_batch = False
        self._thread: threading.Thread | None = None

    @property
    def queued_images(self) -> int:
        """Return how many images wait for a model call."""
        return self._queued_images

    def submit(self, images: np.ndarray, timeout_s: float) -> Future[np.ndarray]:
        """Queue images (N, H, W, 3); the future gives their outputs (N, classes)."""
        now = self._clock()
        job = _Job(images=images, enqueued_at=now, deadline=now + timeout_s)
        with self._condition:
            if self._stopping or self._draining:
                raise ModelServerStoppingError()
            if self._queued_images + job.size > self._max_queue and self._queue:
                raise OverloadedError(
                    f"the model server queue is full ({self._queued_images} images waiting)"
                )
            self._queue.append(job)
            self._queued_images += job.size
            self._condition.notify_all()
        return job.future

    def start(self) -> None:
        """Start the batching thread."""
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def drain(self, timeout_s: float) -> bool:
        """Refuse new work, finish everything queued and running, stop; return if all done.

        What is still queued after timeout_s is failed as by stop().
        """
        deadline = self._clock() + timeout_s
        with self._condition:
            self._draining = True
            self._condition.notify_all()
            while self._queue or self._running_batch:
                remaining = deadline - self._clock()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._condition.wait(min(remaining, 0.1))
            drained = not self._queue and not self._running_batch
        self.stop(timeout_s=max(deadline - self._clock(), 0.0) + 1.0)
        return drained

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the running batch, fail what is still queued, and stop the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._condition:
            while self._queue:
                job = self._queue.popleft()
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ModelUnavailableError("the model server stopped"))
            self._queued_images = 0

    def run_once(self, wait_s: float) -> int:
        """Form and run one batch, waiting up to wait_s for a first request; return its size."""
        jobs = self._take_batch(wait_s)
        if not jobs:
            return 0
        try:
            return self._run_batch(jobs)
        finally:
            with self._condition:
                self._running_batch = False
                self._condition.notify_all()

    def _run(self) -> None:
        while not self._stopping:
            self.run_once(wait_s=0.5)

    def _take_batch(self, wait_s: float) -> list[_Job]:
        with self._condition:
            if not self._queue and not self._stopping:
                self._condition.wait(wait_s)
            jobs: list[_Job] = []
            size = self._take_queued(jobs, 0)
            if not jobs:
                return jobs
            target = min(self._max_batch_size, self._expected_callers)
            wait_until = max(jobs[0].enqueued_at, self._free_since) + self._max_delay_s
            # Nothing new arrives while draining: run what is queued at once.
            while size < target and not self._stopping and not self._draining:
                remaining = wait_until - self._clock()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
                size = self._take_queued(jobs, size)
            self._running_batch = bool(jobs)
            return jobs

    def _take_queued(self, jobs: list[_Job], size: int) -> int:
        """Move queued jobs into the batch while they fit; return the batch's image count."""
        while self._queue:
            job = self._queue[0]
            if jobs and size + job.size > self._max_batch_size:
                break
            self._queue.popleft()
            self._queued_images -= job.size
            if not job.future.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            jobs.append(job)
            size += job.size
        return size

    def _run_batch(self, jobs: list[_Job]) -> int:
        started = self._clock()
        live = []
        for job in jobs:
            if job.deadline <= started:
                job.future.set_exception(
                    InferenceTimeoutError("the request waited past its deadline in the queue")
                )
            else:
                live.append(job)
        if not live:
            return 0
        batch = np.concatenate([job.images for job in live]) if len(live) > 1 else live[0].images
        failed = False
        try:
            outputs = np.asarray(self._predict_batch(batch))
            if outputs.shape[0] != batch.shape[0]:
                raise RuntimeError(
                    f"the model returned {outputs.shape[0]} results for {batch.shape[0]} inputs"
                )
        except Exception:
            logger.exception("model call failed on a batch of %d images", batch.shape[0])
            failed = True
            for job in live:
                job.future.set_exception(InferenceError("the model failed on this batch"))
        else:
            offset = 0
            for job in live:
                job.future.set_result(outputs[offset : offset + job.size])
                offset += job.size
        finished = self._clock()
        with self._condition:
            self._expected_callers = min(
                self._max_batch_size, int(batch.shape[0]) + self._queued_images
            )
            self._free_since = finished
        if self._on_batch is not None:
            self._on_batch(
                BatchRecord(
                    size=int(batch.shape[0]),
                    requests=len(live),
                    queue_wait_s=started - min(job.enqueued_at for job in live),
                    inference_s=finished - started,
                    failed=failed,
                )
            )
        return int(batch.shape[0])
