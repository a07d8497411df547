"""Decode callables the fuzzer can aim at: ``module:function`` names taking upload bytes."""

from __future__ import annotations

import numpy as np

try:
    from onemodel.web.imaging import prepare_image as _prepare
except ImportError:  # before the package layout
    from onemodel.imaging import prepare_image as _prepare

# The service's defaults: a 224x224 model input and Settings().max_image_pixels.
INPUT_SIZE = (224, 224)
MAX_IMAGE_PIXELS = 50_000_000

DEFAULT_TARGET = "tests.support.fuzzing.targets:prepare_image"


def prepare_image(data: bytes) -> np.ndarray:
    """Run the web tier's real decode path (the one /predict uses) on upload bytes."""
    return np.asarray(_prepare(data, INPUT_SIZE, MAX_IMAGE_PIXELS))


# Misbehaving decoders: they prove the runner sees each kind of finding.


def crash(data: bytes) -> None:
    """Die of SIGSEGV, as a native decoder reading a wild pointer does."""
    import ctypes  # noqa: PLC0415

    ctypes.string_at(0)


def spin(data: bytes) -> None:
    """Burn CPU forever, as a decoder in an endless loop does."""
    while True:
        pass


def allocate(data: bytes) -> bytes:
    """Touch 400 MB, as a decoder trusting a header's length does."""
    block = bytearray(400 * 2**20)
    block[::4096] = b"\x01" * len(block[::4096])
    return bytes(block[:1])


def refuse(data: bytes) -> None:
    """Raise the documented error for a bad image."""
    from onemodel.errors import InvalidImageError  # noqa: PLC0415

    raise InvalidImageError("not an image")


def fail(data: bytes) -> None:
    """Raise an undocumented error (what the service would answer with a 500)."""
    raise KeyError("surprise")


SANDBOX_TARGET = "tests.support.fuzzing.targets:sandboxed_prepare_image"


def sandboxed_prepare_image(data: bytes) -> np.ndarray:
    """Decode through the service's decode sandbox (a DecoderPool with its default settings).

    A pool per call: each input runs in a fresh fork of the fuzzer's child, and a decoder
    process must not outlive the fork that started it.
    """
    from onemodel.settings import Settings  # noqa: PLC0415
    from onemodel.web.image_decoder import create_decoder  # noqa: PLC0415

    settings = Settings.from_env()
    decoder = create_decoder(settings)
    try:
        return np.asarray(decoder.prepare(data, INPUT_SIZE))
    finally:
        decoder.close()
