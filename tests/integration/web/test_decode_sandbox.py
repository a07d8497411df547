"""The decode sandbox with real decoder processes: containment, limits, and valid images.

Every hostile file gets its 4xx within 5 s from a pool of real ``decoder_process``
children; a decoder that dies, overruns or loses its client costs only its own request;
valid images come back exactly as an in-process decode gives them.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
from PIL import Image

from onemodel.errors import InvalidImageError, OneModelError, OverloadedError, TooManyPixelsError
from onemodel.web.decoder_pool import DecoderFailedError, DecoderPool
from onemodel.web.imaging import prepare_image
from tests.support.hostile_images import (
    apng_bad_chunk_type,
    apng_gray,
    hostile_files,
    jpeg_hiding_its_size,
    png_claiming_idat,
    progressive_scan_bomb,
)
from tests.support.images import unusual_images
from tests.support.processes import wait_until

MEMORY_BYTES = 256 * 1024 * 1024
TIMEOUT_S = 2.0
MAX_PIXELS = 50_000_000
SIZE = (64, 64)


def _pool(processes: int = 1, timeout_s: float = TIMEOUT_S, wait_s: float = 30.0) -> DecoderPool:
    return DecoderPool(
        processes=processes,
        memory_bytes=MEMORY_BYTES,
        timeout_s=timeout_s,
        max_pixels=MAX_PIXELS,
        wait_s=wait_s,
    )


@pytest.fixture
def pool() -> Iterator[DecoderPool]:
    decoders = _pool()
    yield decoders
    decoders.close()


def _answer(pool: DecoderPool, data: bytes) -> str:
    try:
        pool.prepare(data, SIZE)
    except OneModelError as error:
        return error.code
    return "ok"


def test_valid_images_come_back_as_an_in_process_decode_gives_them(
    pool: DecoderPool, photo_rgb: np.ndarray, photo_jpeg: bytes
) -> None:
    uploads = [photo_jpeg] + [case.data for case in unusual_images(photo_rgb)]
    for data in uploads:
        sandboxed = pool.prepare(data, SIZE)
        assert sandboxed.dtype == np.uint8 and sandboxed.shape == (*SIZE, 3)
        np.testing.assert_array_equal(sandboxed, prepare_image(data, SIZE, MAX_PIXELS))


def test_one_decoder_serves_many_requests(pool: DecoderPool, photo_jpeg: bytes) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    for _ in range(20):
        pool.prepare(photo_jpeg, SIZE)
    assert pool.pids() == {pid}


@pytest.mark.parametrize("name", [case.name for case in hostile_files()])
def test_hostile_file_is_answered_within_five_seconds(
    pool: DecoderPool, photo_jpeg: bytes, name: str
) -> None:
    (case,) = [case for case in hostile_files() if case.name == name]
    started = time.monotonic()
    answer = _answer(pool, case.data)
    assert time.monotonic() - started < 5.0
    assert answer in case.answers
    # The pool still decodes afterwards (with a new process if the old one was killed).
    assert pool.prepare(photo_jpeg, SIZE).shape == (*SIZE, 3)


def test_decoders_are_limited(pool: DecoderPool, photo_jpeg: bytes) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    limits = psutil.Process(pid).rlimit
    address_space, _ = limits(psutil.RLIMIT_AS)
    mapped = psutil.Process(pid).memory_info().vms
    # The cap is the decoder's own size plus the budget (it has grown a little since).
    assert mapped < address_space <= mapped + MEMORY_BYTES
    cpu_soft, _ = limits(psutil.RLIMIT_CPU)
    assert cpu_soft != psutil.RLIM_INFINITY
    assert limits(psutil.RLIMIT_CORE) == (0, 0)


def test_a_claimed_4_gb_chunk_is_refused_without_allocating_it(pool: DecoderPool) -> None:
    peak = _peak_rss_during(pool, lambda: _answer(pool, png_claiming_idat()))
    assert peak < MEMORY_BYTES + 128 * 1024 * 1024


def test_the_pixel_limit_holds_for_what_the_decoder_reads(pool: DecoderPool) -> None:
    with pytest.raises(TooManyPixelsError):
        pool.prepare(jpeg_hiding_its_size(), SIZE)


def test_a_scan_bomb_is_killed_at_the_deadline(pool: DecoderPool, photo_jpeg: bytes) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    started = time.monotonic()
    with pytest.raises(DecoderFailedError, match="in time"):
        pool.prepare(progressive_scan_bomb(), SIZE)
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 1.0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert pool.pids() == set()


def test_a_decoder_that_dies_costs_only_its_request(pool: DecoderPool, photo_jpeg: bytes) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    # A native crash, as a malformed file causes it: SIGSEGV while the decoder works.
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGSEGV))
    killer.start()
    with pytest.raises(DecoderFailedError, match="decoder failed"):
        pool.prepare(progressive_scan_bomb(), SIZE)
    killer.join()
    assert pool.prepare(photo_jpeg, SIZE).shape == (*SIZE, 3)
    assert pool.pids() and pool.pids() != {pid}


@pytest.mark.parametrize(
    ("crash", "data"),
    [
        ("SIGABRT", apng_gray(32, dispose=1)),  # heap overflow in OpenCV's APNG reader
        ("SIGSEGV", apng_bad_chunk_type()),  # libpng longjmps into a returned frame
    ],
)
def test_a_real_decoder_crash_costs_only_its_request(
    pool: DecoderPool, photo_jpeg: bytes, caplog: pytest.LogCaptureFixture, crash: str, data: bytes
) -> None:
    # Earlier in-process imports (TensorFlow, OpenVINO, Gunicorn) may reconfigure logging and
    # disable loggers that already exist; this test reads the pool's own warning.
    logging.getLogger("onemodel.web.decoder_pool").disabled = False
    caplog.set_level(logging.WARNING, logger="onemodel.web.decoder_pool")
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    with pytest.raises(DecoderFailedError, match="decoder failed"):
        pool.prepare(data, SIZE)
    # Heap corruption shows as the named signal in most runs, as another fatal one in some.
    assert f"died of {crash}" in caplog.text or "died of SIG" in caplog.text, caplog.text
    assert pool.prepare(photo_jpeg, SIZE).shape == (*SIZE, 3)
    assert pool.pids() and pid not in pool.pids()


def test_a_cpu_overrun_is_stopped_by_the_decoder_itself(photo_jpeg: bytes) -> None:
    # A wall-clock deadline far away: only RLIMIT_CPU (1 s here) can stop the bomb.
    pool = DecoderPool(
        processes=1,
        memory_bytes=MEMORY_BYTES,
        timeout_s=30.0,
        max_pixels=MAX_PIXELS,
        wait_s=5.0,
        cpu_s=1,
    )
    try:
        started = time.monotonic()
        with pytest.raises(DecoderFailedError, match="CPU time"):
            pool.prepare(progressive_scan_bomb(scans=40000), SIZE)
        assert time.monotonic() - started < 10.0
    finally:
        pool.close()


def test_a_decode_stops_when_its_client_leaves(pool: DecoderPool, photo_jpeg: bytes) -> None:
    pool.prepare(photo_jpeg, SIZE)
    server_side, client_side = socket.socketpair()
    closer = threading.Timer(0.2, client_side.close)
    closer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DecoderFailedError, match="closed the connection"):
            pool.prepare(progressive_scan_bomb(), SIZE, client=server_side)
    finally:
        closer.join()
        server_side.close()
    assert time.monotonic() - started < TIMEOUT_S


def test_concurrent_requests_share_the_processes(photo_jpeg: bytes) -> None:
    pool = _pool(processes=2)
    seen: set[int] = set()
    results: list[str] = []

    def decode_many() -> None:
        for _ in range(5):
            results.append(_answer(pool, photo_jpeg))
            seen.update(pool.pids())

    threads = [threading.Thread(target=decode_many) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert results == ["ok"] * 30
        assert 1 <= len(seen) <= 2  # never more processes than the budget
    finally:
        pool.close()


def test_normal_requests_go_on_while_a_bomb_decodes(photo_jpeg: bytes) -> None:
    pool = _pool(processes=2)
    bomb: list[str] = []
    try:
        pool.prepare(photo_jpeg, SIZE)
        worker = threading.Thread(
            target=lambda: bomb.append(_answer(pool, progressive_scan_bomb()))
        )
        worker.start()
        started = time.monotonic()
        answers = [_answer(pool, photo_jpeg) for _ in range(10)]
        assert answers == ["ok"] * 10
        assert time.monotonic() - started < TIMEOUT_S  # not queued behind the bomb
        worker.join(timeout=10)
        assert bomb == ["invalid_image"]
    finally:
        pool.close()


def test_a_full_pool_answers_overloaded_after_waiting() -> None:
    pool = _pool(processes=1, wait_s=0.2)
    done = threading.Event()
    try:
        worker = threading.Thread(
            target=lambda: (_answer(pool, progressive_scan_bomb()), done.set())
        )
        worker.start()
        wait_until(lambda: bool(pool.pids()), timeout_s=10, what="a decoder")
        with pytest.raises(OverloadedError):
            pool.prepare(b"\xff\xd8\xff", SIZE)
        worker.join(timeout=10)
        assert done.is_set()
    finally:
        pool.close()


def test_close_stops_every_decoder(photo_jpeg: bytes) -> None:
    pool = _pool(processes=2)
    pool.prepare(photo_jpeg, SIZE)
    pids = pool.pids()
    pool.close()
    for pid in pids:
        wait_until(lambda pid=pid: not _alive(pid), timeout_s=5, what=f"decoder {pid} to stop")
    with pytest.raises(OverloadedError):
        pool.prepare(photo_jpeg, SIZE)


def test_a_large_photo_is_still_decoded(pool: DecoderPool) -> None:
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    rgb[:, :2000] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90, progressive=True)
    out = pool.prepare(buffer.getvalue(), SIZE)
    assert out.shape == (*SIZE, 3)
    assert out[32, 5, 0] > 150 and out[32, 60, 0] < 40


def test_replies_smaller_and_larger_than_the_pipe_come_back_whole(
    pool: DecoderPool, photo_jpeg: bytes
) -> None:
    # 224x224x3 (150 KB) fits the enlarged reply pipe; 1024x1024x3 (3 MiB) takes many reads.
    for size in ((224, 224), (1024, 1024), (224, 224)):
        expected = prepare_image(photo_jpeg, size, MAX_PIXELS)
        assert np.array_equal(pool.prepare(photo_jpeg, size), expected)


def test_a_whole_224_reply_fits_the_reply_pipe(pool: DecoderPool, photo_jpeg: bytes) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (decoder,) = pool._idle  # the one idle decoder and its pipes (internals, on purpose)
    capacity = fcntl.fcntl(decoder._replies.fileno(), getattr(fcntl, "F_GETPIPE_SZ", 1032))
    assert capacity >= 224 * 224 * 3 + 9


def test_an_upload_larger_than_the_pipe_is_written_whole(pool: DecoderPool) -> None:
    # Random pixels do not compress: a PNG of several MiB, written in many partial writes.
    rgb = np.random.default_rng(5).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=0)
    data = buffer.getvalue()
    assert len(data) > 4 * 1024 * 1024
    assert np.array_equal(pool.prepare(data, SIZE), prepare_image(data, SIZE, MAX_PIXELS))


def test_a_decoder_reports_undecodable_images_and_lives_on(
    pool: DecoderPool, photo_jpeg: bytes
) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    with pytest.raises(InvalidImageError):
        pool.prepare(photo_jpeg[: len(photo_jpeg) // 3], SIZE)
    assert pool.pids() == {pid}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _peak_rss_during(pool: DecoderPool, action: object) -> int:
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            for pid in pool.pids():
                try:
                    peak = max(peak, psutil.Process(pid).memory_info().rss)
                except psutil.Error:
                    pass
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()  # type: ignore[operator]
    finally:
        stop.set()
        sampler.join()
    return peak


def test_a_decoder_that_died_while_idle_is_replaced_silently(
    pool: DecoderPool, photo_jpeg: bytes
) -> None:
    pool.prepare(photo_jpeg, SIZE)
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    wait_until(lambda: not _alive(pid), timeout_s=5, what=f"decoder {pid} to die")
    assert pool.prepare(photo_jpeg, SIZE).shape == (*SIZE, 3)
    assert pool.pids() and pid not in pool.pids()


def test_warm_starts_one_decoder_that_the_first_upload_then_uses(
    pool: DecoderPool, photo_jpeg: bytes
) -> None:
    pool.warm()
    started = pool.pids()
    assert len(started) == 1
    pool.warm()  # a running decoder is enough: no second one
    assert pool.pids() == started
    pool.prepare(photo_jpeg, SIZE)
    assert pool.pids() == started
    (pid,) = started
    pool.close()
    wait_until(lambda: not psutil.pid_exists(pid), 10, "the warmed decoder to stop")
    pool.warm()  # a closed pool starts nothing
    assert pool.pids() == set()
