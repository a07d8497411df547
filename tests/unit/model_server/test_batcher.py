"""The batcher, driven step by step with a fake model (no threads unless the test needs one)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from onemodel.errors import (
    InferenceError,
    InferenceTimeoutError,
    ModelServerStoppingError,
    ModelUnavailableError,
    OverloadedError,
)
from onemodel.model_server.batcher import Batcher, BatchRecord


class FakeModel:
    """Returns, for each image, its first pixel value and the batch size; records calls."""

    def __init__(self, fail_when: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_when = fail_when

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(images.shape[0])
        if self.fail_when is not None and (images[:, 0, 0, 0] == self.fail_when).any():
            raise RuntimeError("poisoned input")
        first = images[:, 0, 0, 0].astype(np.float32)
        return np.stack([first, np.full_like(first, images.shape[0])], axis=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def images_of(*values: int) -> np.ndarray:
    batch = np.zeros((len(values), 2, 2, 3), np.uint8)
    for index, value in enumerate(values):
        batch[index] = value
    return batch


def make(model: FakeModel, **bounds: float) -> tuple[Batcher, list[BatchRecord]]:
    records: list[BatchRecord] = []
    batcher = Batcher(
        model,
        max_batch_size=int(bounds.get("max_batch_size", 8)),
        max_delay_ms=bounds.get("max_delay_ms", 5000.0),
        max_queue=int(bounds.get("max_queue", 64)),
        on_batch=records.append,
    )
    return batcher, records


def test_lone_request_runs_at_once_without_the_delay() -> None:
    model = FakeModel()
    batcher, _ = make(model, max_delay_ms=10_000)
    future = batcher.submit(images_of(7), timeout_s=30)
    started = time.monotonic()
    assert batcher.run_once(wait_s=0) == 1
    assert time.monotonic() - started < 2.0  # far below the 10 s delay bound
    assert future.result(0)[0, 0] == 7


def test_queued_requests_share_one_model_call_and_get_their_own_results() -> None:
    model = FakeModel()
    batcher, records = make(model)
    futures = [batcher.submit(images_of(value), timeout_s=30) for value in (1, 2, 3, 4, 5)]
    assert batcher.run_once(wait_s=0) == 5
    assert model.calls == [5]
    for value, future in zip((1, 2, 3, 4, 5), futures, strict=True):
        result = future.result(0)
        assert result.shape == (1, 2)
        assert result[0, 0] == value
        assert result[0, 1] == 5  # computed in the batch of five
    assert records[0].requests == 5 and records[0].size == 5 and not records[0].failed


def test_multi_image_requests_keep_their_slices() -> None:
    model = FakeModel()
    batcher, _ = make(model)
    first = batcher.submit(images_of(1, 2, 3), timeout_s=30)
    second = batcher.submit(images_of(9), timeout_s=30)
    batcher.run_once(wait_s=0)
    assert first.result(0)[:, 0].tolist() == [1, 2, 3]
    assert second.result(0)[:, 0].tolist() == [9]


def test_max_batch_size_bounds_each_call() -> None:
    model = FakeModel()
    batcher, _ = make(model, max_batch_size=4, max_delay_ms=0)
    futures = [batcher.submit(images_of(value), timeout_s=30) for value in range(10)]
    while batcher.run_once(wait_s=0):
        pass
    assert model.calls == [4, 4, 2]
    assert [future.result(0)[0, 0] for future in futures] == list(range(10))


def test_full_queue_refuses_at_once() -> None:
    batcher, _ = make(FakeModel(), max_queue=3)
    for value in range(3):
        batcher.submit(images_of(value), timeout_s=30)
    assert batcher.queued_images == 3
    with pytest.raises(OverloadedError, match="queue is full"):
        batcher.submit(images_of(99), timeout_s=30)


def test_request_past_its_deadline_is_answered_with_timeout_and_not_computed() -> None:
    model = FakeModel()
    clock = FakeClock()
    batcher = Batcher(model, max_batch_size=8, max_delay_ms=0, max_queue=8, clock=clock)
    late = batcher.submit(images_of(1), timeout_s=1.0)
    clock.now += 1.5
    fresh = batcher.submit(images_of(2), timeout_s=1.0)
    batcher.run_once(wait_s=0)
    with pytest.raises(InferenceTimeoutError):
        late.result(0)
    assert fresh.result(0)[0, 0] == 2
    assert model.calls == [1]


def test_failing_batch_fails_only_its_callers_and_the_batcher_keeps_serving() -> None:
    model = FakeModel(fail_when=13)
    batcher, records = make(model, max_batch_size=2, max_delay_ms=0)
    poisoned = [batcher.submit(images_of(value), timeout_s=30) for value in (13, 1)]
    healthy = batcher.submit(images_of(5), timeout_s=30)
    batcher.run_once(wait_s=0)
    batcher.run_once(wait_s=0)
    for future in poisoned:
        with pytest.raises(InferenceError):
            future.result(0)
    assert healthy.result(0)[0, 0] == 5
    assert [record.failed for record in records] == [True, False]


def test_a_model_returning_the_wrong_number_of_rows_is_an_inference_error() -> None:
    batcher, _ = make(FakeModel(), max_delay_ms=0)
    batcher._predict_batch = lambda batch: np.zeros((batch.shape[0] + 1, 2))  # type: ignore[method-assign]
    future = batcher.submit(images_of(1), timeout_s=30)
    batcher.run_once(wait_s=0)
    with pytest.raises(InferenceError):
        future.result(0)


def test_cancelled_request_is_skipped() -> None:
    model = FakeModel()
    batcher, _ = make(model)
    gone = batcher.submit(images_of(1), timeout_s=30)
    kept = batcher.submit(images_of(2), timeout_s=30)
    assert gone.cancel()
    batcher.run_once(wait_s=0)
    assert model.calls == [1]
    assert kept.result(0)[0, 0] == 2


def test_under_steady_load_a_batch_waits_for_as_many_callers_as_the_previous_one() -> None:
    model = FakeModel()
    batcher, _ = make(model, max_batch_size=8, max_delay_ms=5000)
    for value in range(4):
        batcher.submit(images_of(value), timeout_s=30)
    batcher.run_once(wait_s=0)  # previous batch: 4
    batcher.submit(images_of(10), timeout_s=30)

    def latecomers() -> None:
        for value in (11, 12, 13):
            time.sleep(0.02)
            batcher.submit(images_of(value), timeout_s=30)

    thread = threading.Thread(target=latecomers)
    thread.start()
    assert batcher.run_once(wait_s=0) == 4
    thread.join()
    assert model.calls == [4, 4]


def test_half_batches_formed_while_the_model_was_busy_merge_back() -> None:
    batcher: Batcher

    class ArrivalsDuringCall(FakeModel):
        def __call__(self, images: np.ndarray) -> np.ndarray:
            if not self.calls:  # two more callers queue while the first batch runs
                batcher.submit(images_of(20), timeout_s=30)
                batcher.submit(images_of(21), timeout_s=30)
            return super().__call__(images)

    model = ArrivalsDuringCall()
    batcher, _ = make(model, max_batch_size=8, max_delay_ms=5000)
    for value in (1, 2):
        batcher.submit(images_of(value), timeout_s=30)
    assert batcher.run_once(wait_s=0) == 2

    def first_callers_return() -> None:
        for value in (1, 2):
            time.sleep(0.02)
            batcher.submit(images_of(value), timeout_s=30)

    thread = threading.Thread(target=first_callers_return)
    thread.start()
    # The two that queued during the call wait for the two just answered: one batch of 4.
    assert batcher.run_once(wait_s=0) == 4
    thread.join()
    assert model.calls == [2, 4]


def test_delay_bound_caps_the_wait() -> None:
    model = FakeModel()
    batcher, _ = make(model, max_batch_size=8, max_delay_ms=50)
    for value in range(4):
        batcher.submit(images_of(value), timeout_s=30)
    batcher.run_once(wait_s=0)
    batcher.submit(images_of(1), timeout_s=30)
    started = time.monotonic()
    assert batcher.run_once(wait_s=0) == 1  # nobody else came: ran after the 50 ms bound
    assert 0.03 < time.monotonic() - started < 2.0


def test_thread_start_stop_answers_queued_requests() -> None:
    model = FakeModel()
    batcher, _ = make(model, max_delay_ms=0)
    batcher.start()
    assert batcher.submit(images_of(3), timeout_s=30).result(5)[0, 0] == 3
    batcher.stop()
    with pytest.raises(ModelUnavailableError):
        batcher.submit(images_of(4), timeout_s=30)


def test_stop_fails_what_is_still_queued() -> None:
    batcher, _ = make(FakeModel())
    waiting = batcher.submit(images_of(1), timeout_s=30)
    batcher.stop()
    with pytest.raises(ModelUnavailableError):
        waiting.result(0)


class SlowModel(FakeModel):
    """A FakeModel whose every call takes a while, so requests queue behind it."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def __call__(self, images: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().__call__(images)


def test_drain_answers_everything_queued_and_running_then_refuses() -> None:
    model = SlowModel(0.05)
    batcher, _ = make(model, max_batch_size=2, max_delay_ms=0)
    batcher.start()
    futures = [batcher.submit(images_of(value), timeout_s=30) for value in range(7)]
    assert batcher.drain(timeout_s=10) is True
    assert [future.result(0)[0, 0] for future in futures] == list(range(7))
    assert sum(model.calls) == 7 and max(model.calls) <= 2
    with pytest.raises(ModelServerStoppingError):
        batcher.submit(images_of(9), timeout_s=30)


def test_drain_refuses_new_work_with_the_retryable_stopping_error() -> None:
    model = SlowModel(0.2)
    batcher, _ = make(model, max_batch_size=1, max_delay_ms=0)
    batcher.start()
    first = batcher.submit(images_of(1), timeout_s=30)
    refused: list[BaseException] = []
    done = threading.Event()

    def submit_while_draining() -> None:
        while not done.is_set():
            try:
                batcher.submit(images_of(2), timeout_s=30)
            except ModelServerStoppingError as error:
                refused.append(error)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=submit_while_draining)
    thread.start()
    assert batcher.drain(timeout_s=10) is True
    done.set()
    thread.join(5)
    assert first.result(0)[0, 0] == 1
    assert refused and refused[0].status == 503 and refused[0].headers() == {"Retry-After": "1"}


def test_drain_past_its_timeout_fails_the_rest() -> None:
    model = SlowModel(0.3)
    batcher, _ = make(model, max_batch_size=1, max_delay_ms=0)
    batcher.start()
    futures = [batcher.submit(images_of(value), timeout_s=30) for value in range(5)]
    assert batcher.drain(timeout_s=0.1) is False
    outcomes = []
    for future in futures:
        try:
            future.result(5)
            outcomes.append("answered")
        except ModelUnavailableError:
            outcomes.append("failed")
    assert outcomes[0] == "answered" and "failed" in outcomes
