"""The OpenVINO engine: convert a Keras model, compile it with an explicit precision, run it.

Imported only by the model server, and only when OpenVINO is to be used.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from onemodel.errors import ModelLoadError

# Always explicit: without a hint OpenVINO computes in bfloat16 on CPUs that have it
# (avx512_bf16, AMX), silently, even for a float32 model.
# An int8 model computes its unquantized operations in f32, as a float32 one does.
_PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}
_DEVICE = "CPU"
# MODEL_OPENVINO_STREAMS default: each batch split across 2 streams of 1 thread each
# (docs/engines.md, "Throughput mode": on this shared 2-core box 1.1-2x the images per second
# of one 2-thread request at batch 4-8, measured interleaved).
DEFAULT_STREAMS = 2


class ConversionError(ModelLoadError):
    """The Keras model could not be converted to OpenVINO."""

    code = "conversion_failed"
    default_message = "the model could not be converted to OpenVINO"


@functools.cache
def _core() -> Any:
    return ov.Core()


class OpenVINOToolkit:
    """Convert, save, read and compile models (the seam ``loading`` uses; tests fake it)."""

    def __init__(self, streams: int = DEFAULT_STREAMS) -> None:
        self.streams = streams

    def version(self) -> str:
        """Return the OpenVINO version (part of every cache key)."""
        return str(ov.get_version())

    def convert(self, keras_model: Any, input_size: tuple[int, int]) -> Any:
        """Convert a Keras model to an OpenVINO model whose batch dimension stays dynamic.

        Traced through a ``tf.function`` with an explicit input signature: given a Keras 3
        Sequential model directly, ``ov.convert_model`` cannot trace it (unknown input rank).
        """
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf  # noqa: PLC0415  (only a conversion needs it, warm starts not)

        height, width = input_size
        signature = tf.TensorSpec((None, height, width, 3), tf.float32)
        function = tf.function(lambda batch: keras_model(batch, training=False))
        try:
            with warnings.catch_warnings():
                # Keras warns about the input structure of the traced call; harmless here.
                warnings.simplefilter("ignore")
                return ov.convert_model(function.get_concrete_function(signature))
        except Exception as error:  # the frontend raises plain Exception (OpConversionFailure)
            raise ConversionError(
                f"OpenVINO cannot convert the model: {_summary(str(error))}"
            ) from None

    def save(self, model: Any, xml_path: Path) -> None:
        """Write a model as OpenVINO IR (``.xml`` plus ``.bin``), weights kept in float32."""
        # compress_to_fp16 defaults to True and would change every weight.
        ov.save_model(model, str(xml_path), compress_to_fp16=False)

    def read(self, xml_path: Path) -> Any:
        """Read an OpenVINO IR model."""
        return _core().read_model(str(xml_path))

    def compile(self, model: Any, precision: str) -> OpenVINOEngine:
        """Compile a model for this CPU with an explicit precision hint."""
        return OpenVINOEngine(model, precision, self.streams)


class OpenVINOEngine:
    """A model compiled for the CPU; satisfies ``engines.Engine``.

    With one stream, a batch is one synchronous request using every core (OpenVINO's
    LATENCY mode) on the model as converted (dynamic batch). With ``streams`` > 1 the
    model is reshaped to a static batch of one and compiled for THROUGHPUT with that many
    streams (the cores shared out among them); the images of a batch are run one per
    request, ``streams`` at a time, and their scores come back in order. A static shape
    lets the CPU plugin pick kernels for it: on EfficientNetB0 (2 cores, AVX2) that was
    1.9x the dynamic-batch LATENCY request at batch 8 and 1.2x splitting a dynamic-batch
    model in two (docs/engines.md, "Throughput mode"). Either way one batch runs at a time,
    as the batcher forms them.
    """

    name = "openvino"

    def __init__(self, model: Any, precision: str, streams: int = 1) -> None:
        if streams < 1:
            raise ValueError("streams must be at least 1")
        self.precision = precision
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision]}
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
            model = _one_image_per_request(model)
        else:
            config.update(PERFORMANCE_HINT="LATENCY")
        self._compiled = _core().compile_model(model, _DEVICE, config)
        # What OpenVINO will really compute in: f32 on CPUs without bfloat16 units.
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = str(hint.get_type_name())  # "f32", "bf16"
        self.streams = int(self._compiled.get_property("NUM_STREAMS"))
        self._requests = [
            self._compiled.create_infer_request() for _ in range(max(1, self.streams))
        ]
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return float32 scores (N, classes) for a preprocessed float32 batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            if len(self._requests) == 1:
                outputs = self._requests[0].infer([batch])
                # Copied: the request reuses its output buffer on the next call.
                return np.array(outputs[0], dtype=np.float32)
            return self._per_image(batch)

    def _per_image(self, batch: np.ndarray) -> np.ndarray:
        """Run each image as its own request, ``streams`` at once; scores in batch order."""
        scores: list[np.ndarray | None] = [None] * batch.shape[0]
        running: dict[int, int] = {}  # request slot -> image index
        try:
            for index in range(batch.shape[0]):
                slot = index % len(self._requests)
                if slot in running:
                    scores[running.pop(slot)] = self._collect(slot)
                self._requests[slot].start_async([batch[index : index + 1]])
                running[slot] = index
            for slot, image in sorted(running.items(), key=lambda item: item[1]):
                scores[image] = self._collect(slot)
            running.clear()
        finally:
            # After a failure: let every started request finish before the next batch.
            _wait_all([self._requests[slot] for slot in running])
        return np.stack([row for row in scores if row is not None])

    def _collect(self, slot: int) -> np.ndarray:
        request = self._requests[slot]
        request.wait()
        # Copied: the request reuses its output buffer on the next call.
        return np.array(request.get_output_tensor(0).data[0], dtype=np.float32)


def _one_image_per_request(model: Any) -> Any:
    """Return a copy of ``model`` with a static batch of one (the caller's stays dynamic)."""
    single = model.clone()
    shape = single.input(0).get_partial_shape()
    shape[0] = 1
    single.reshape({single.input(0): shape})
    return single


def _wait_all(requests: list[Any]) -> None:
    """Wait for every request, then raise the first failure: none is left running."""
    failure: BaseException | None = None
    for request in requests:
        try:
            request.wait()
        except Exception as error:  # OpenVINO raises RuntimeError; keep waiting for the rest
            failure = failure or error
    if failure is not None:
        raise failure


def _summary(text: str) -> str:
    """Return the useful part of a frontend error: its ``-- ...`` summary lines if any."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    items = [line.removeprefix("-- ") for line in lines if line.startswith("-- ")]
    return "; ".join(items) if items else " ".join(lines[:3])
