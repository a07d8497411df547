"""Where uploads are decoded: the ImageDecoder protocol and the choice made from settings."""

from __future__ import annotations

import socket
from typing import Protocol

import numpy as np

from onemodel.settings import Settings


class ImageDecoder(Protocol):
    """Turns untrusted image bytes into the model's input, RGB uint8 (height, width, 3)."""

    def prepare(
        self, data: bytes, size: tuple[int, int], client: socket.socket | None = None
    ) -> np.ndarray: ...

    def warm(self) -> None: ...

    def close(self) -> None: ...


class InProcessDecoder:
    """Decodes in the calling process: no containment (DECODER_PROCESSES=0)."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels

    def prepare(
        self, data: bytes, size: tuple[int, int], client: socket.socket | None = None
    ) -> np.ndarray:
        """Decode and resize ``data`` here, in this process."""
        from onemodel.web.imaging import prepare_image  # noqa: PLC0415  (OpenCV only if used)

        return prepare_image(data, size, self._max_pixels)

    def warm(self) -> None:
        """Nothing to start."""

    def close(self) -> None:
        """Nothing to stop."""


def create_decoder(settings: Settings) -> ImageDecoder:
    """Return the decoder the settings ask for: a sandbox pool unless DECODER_PROCESSES=0."""
    if settings.decoder_processes == 0:
        return InProcessDecoder(settings.max_image_pixels)
    from onemodel.web.decoder_pool import DecoderPool  # noqa: PLC0415

    return DecoderPool(
        processes=settings.decoder_processes,
        memory_bytes=settings.decode_memory_bytes,
        timeout_s=settings.decode_timeout_s,
        max_pixels=settings.max_image_pixels,
        wait_s=settings.request_timeout_s,
    )
