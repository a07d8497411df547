"""A decoder process: ``python -m onemodel.web.decoder_process``, run by a web worker's pool.

It turns untrusted image bytes into the model's small input array, one request at a time,
under hard limits set on itself before the first request: an address-space cap
(RLIMIT_AS), a CPU-time limit per decode (RLIMIT_CPU, raised by the budget before each
decode), no core dumps, one OpenCV thread, and OpenCV's own pixel limit
(OPENCV_IO_MAX_IMAGE_PIXELS, which its decoders check on the header they read themselves,
before allocating). A native crash, an allocation over the cap or a CPU overrun kills only
this process; the pool answers that one request with a 4xx and starts a new process.

Requests come on stdin and replies go to the file descriptor stdout had at start; stdout
itself is pointed at /dev/null because libpng and OpenCV print to it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from typing import BinaryIO

from onemodel.web.decoder_protocol import (
    MAX_ERROR_BYTES,
    READY,
    REPLY,
    REQUEST,
    REQUEST_MAGIC,
    STATUS_ERROR,
    STATUS_OK,
)


def main(argv: list[str] | None = None) -> int:
    """Set this process's limits, then decode requests from stdin until it closes."""
    parser = argparse.ArgumentParser(prog="python -m onemodel.web.decoder_process")
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--max-pixels", type=int, required=True)
    args = parser.parse_args(argv)
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    _limit_self(args.memory_bytes)
    replies.write(READY)
    serve(sys.stdin.buffer, replies, args.cpu_s, args.max_pixels)
    return 0


def serve(requests: BinaryIO, replies: BinaryIO, cpu_s: int, max_pixels: int) -> None:
    """Answer framed requests until the parent closes the pipe."""
    from onemodel.errors import OneModelError  # noqa: PLC0415  (imported after the limits)
    from onemodel.web.imaging import prepare_image  # noqa: PLC0415

    while True:
        header = _read_exactly(requests, REQUEST.size)
        if header is None:
            return
        magic, height, width, length = REQUEST.unpack(header)
        if magic != REQUEST_MAGIC:
            return
        data = _read_exactly(requests, length)
        if data is None:
            return
        _allow_cpu(cpu_s)
        try:
            pixels = prepare_image(data, (height, width), max_pixels)
        except OneModelError as error:
            _reply_error(replies, error.code, error.message)
            continue
        except MemoryError:
            _reply_error(
                replies, "invalid_image", "the image could not be decoded within the memory limit"
            )
            continue
        except Exception:
            _reply_error(replies, "invalid_image", "the image could not be decoded")
            continue
        del data
        # One writev: the worker finds the header and the pixels in the pipe together.
        _write_all(replies, [REPLY.pack(STATUS_OK, height, width, pixels.nbytes), pixels.data])


def _limit_self(memory_bytes: int) -> None:
    # Imports first, so the cap is headroom for decoding on top of what the code itself maps.
    import cv2  # noqa: PLC0415
    import numpy  # noqa: F401, PLC0415

    cv2.setNumThreads(1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    mapped = _mapped_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_bytes, mapped + memory_bytes))


def _allow_cpu(cpu_s: int) -> None:
    # RLIMIT_CPU counts the process's whole life: move the soft limit to "used so far + the
    # budget" before each decode. Past it the kernel sends SIGXCPU, which terminates us.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_s
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _mapped_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _read_exactly(stream: BinaryIO, length: int) -> bytes | None:
    data = stream.read(length)
    if data is None or len(data) != length:
        return None
    return data


def _write_all(replies: BinaryIO, buffers: list[bytes | memoryview]) -> None:
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    while views:
        written = os.writev(replies.fileno(), views)
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


def _reply_error(replies: BinaryIO, code: str, message: str) -> None:
    payload = f"{code}\n{message}".encode()[:MAX_ERROR_BYTES]
    replies.write(REPLY.pack(STATUS_ERROR, 0, 0, len(payload)) + payload)


if __name__ == "__main__":
    sys.exit(main())
