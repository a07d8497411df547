"""Load the classifier on the engine MODEL_ENGINE asks for: verify conversions, use the cache.

``tensorflow`` runs the Keras model. ``openvino`` converts it, checks the converted model
against Keras on seeded inputs, compiles it with an explicit precision and caches it, so a
warm start reads the converted model without importing TensorFlow. ``auto`` is
``openvino`` where OpenVINO is installed and the conversion verifies, else ``tensorflow``.

``int8`` quantizes the verified float32 conversion with NNCF on MODEL_CALIBRATION_DIR and
serves it only when it keeps the float32 top-1 class of at least MODEL_MIN_AGREEMENT of the
held-out images (``quantization``); ``auto`` without OpenVINO or NNCF, or with a model that
does not convert, serves TensorFlow float32 instead, and says why.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from onemodel.boundary.contract import Agreement
from onemodel.errors import ConfigError, ModelLoadError
from onemodel.model_server.calibration import (
    CALIBRATION_RULES,
    list_calibration_files,
    read_calibration_set,
)
from onemodel.model_server.engines import Engine
from onemodel.model_server.model import (
    Classifier,
    cached_imagenet_weights,
    load_classifier,
    warn_if_random_weights,
)
from onemodel.model_server.model_cache import CacheEntry, CacheMetadata, ModelCache, cache_key
from onemodel.model_server.preprocessing import preprocess
from onemodel.model_server.quantization import NNCFQuantizer, Quantizer, quantize_gated
from onemodel.model_server.verification import (
    MAX_ABS_DIFFERENCE,
    conversion_verified,
    describe_agreement,
    measure_agreement,
    quantization_accepted,
    verification_images,
)
from onemodel.settings import Settings

logger = logging.getLogger(__name__)


class EngineError(ModelLoadError):
    """OpenVINO cannot serve this model: ``auto`` falls back to TensorFlow, ``openvino`` stops."""

    code = "engine_unusable"
    default_message = "OpenVINO cannot serve this model"


class Toolkit(Protocol):
    """What loading needs from OpenVINO (``engines.openvino.OpenVINOToolkit``; tests fake it)."""

    def version(self) -> str: ...

    def convert(self, keras_model: Any, input_size: tuple[int, int]) -> Any: ...

    def compile(self, model: Any, precision: str) -> Engine: ...

    def save(self, model: Any, xml_path: Path) -> None: ...

    def read(self, xml_path: Path) -> Any: ...


def load_for_serving(
    settings: Settings, toolkit: Toolkit | None = None, quantizer: Quantizer | None = None
) -> Classifier:
    """Return the classifier on the engine the settings choose; raise ModelLoadError clearly."""
    if settings.engine == "tensorflow":
        return _on_tensorflow(load_classifier(settings), "MODEL_ENGINE=tensorflow")
    # TensorFlow has no int8: a fallback serves the float32 reference.
    fallback_settings = settings.replace(precision="float32") if _int8(settings) else settings
    if toolkit is None:
        unusable = _why_not_openvino(
            explicit=settings.engine == "openvino", int8=_int8(settings) and quantizer is None
        )
        if unusable:
            if settings.engine == "openvino":
                raise ModelLoadError(f"MODEL_ENGINE=openvino: {unusable}")
            return _on_tensorflow(load_classifier(fallback_settings), unusable)
        toolkit = _openvino_toolkit(settings.openvino_streams)
    try:
        return _load_openvino(settings, toolkit, quantizer)
    except _Fallback as fallback:
        if settings.engine == "openvino":
            raise ModelLoadError(f"MODEL_ENGINE=openvino: {fallback.message}") from None
        logger.warning("MODEL_ENGINE=auto: using TensorFlow because %s", fallback.message)
        reason = f"OpenVINO not used: {fallback.message}"
        if _int8(settings):
            reason += " (TensorFlow has no int8: serving float32)"
        if fallback.reference is not None and fallback_settings.precision == "float32":
            return _on_tensorflow(fallback.reference, reason)
        fallback.reference = None
        gc.collect()
        return _on_tensorflow(load_classifier(fallback_settings), reason)


class _Fallback(Exception):
    """OpenVINO failed; carries the Keras classifier already built, to reuse in float32."""

    def __init__(self, message: str, reference: Classifier | None) -> None:
        super().__init__(message)
        self.message = message
        self.reference = reference


def _int8(settings: Settings) -> bool:
    return settings.precision == "int8"


def _load_openvino(
    settings: Settings, toolkit: Toolkit, quantizer: Quantizer | None = None
) -> Classifier:
    cache = ModelCache(Path(settings.cache_dir)) if settings.cache_dir else None
    source = _source(settings, cache) if cache is not None else None
    if _int8(settings):
        return _load_int8(settings, toolkit, quantizer, cache, source)
    key = None
    if cache is not None and source is not None:
        key = cache_key(source[1], settings.preprocess_mode, settings.precision, toolkit.version())
        entry = cache.lookup(key)
        if entry is not None:
            try:
                classifier = _from_cache(entry, settings, toolkit)
            except Exception as error:  # a damaged IR: convert again
                logger.warning("cache entry %s unusable (%s): converting again", entry, error)
            else:
                warn_if_random_weights(
                    settings.model_path, settings.weights
                )  # nothing built to say it
                return classifier
    classifier, model = _convert_verify_store(
        settings, settings.precision, toolkit, cache, source, key
    )
    del model
    if cache is not None and source is not None and key is not None:
        classifier = dataclasses.replace(classifier, cache="miss")
    gc.collect()  # the Keras reference and its graph are garbage now
    return classifier


def _load_int8(
    settings: Settings,
    toolkit: Toolkit,
    quantizer: Quantizer | None,
    cache: ModelCache | None,
    source: tuple[str, str] | None,
) -> Classifier:
    """Serve a cached int8 model, or quantize the float32 conversion and gate it."""
    if settings.calibration_dir is None:  # Settings.validated() says so first
        raise ConfigError("MODEL_PRECISION=int8 needs MODEL_CALIBRATION_DIR")
    # Listed and hashed (not decoded) first: the hash is part of the key of a warm start.
    files = list_calibration_files(Path(settings.calibration_dir), settings.max_upload_bytes)
    key = None
    if cache is not None and source is not None:
        version = quantizer.version() if quantizer is not None else _nncf_version()
        key = cache_key(
            "\n".join(
                [
                    source[1],
                    f"calibration sha256={files.digest} {CALIBRATION_RULES}",
                    f"max_upload_bytes={settings.max_upload_bytes}",
                    f"max_image_pixels={settings.max_image_pixels}",
                    f"min_agreement={settings.min_agreement!r}",
                    f"nncf={version}",
                ]
            ),
            settings.preprocess_mode,
            "int8",
            toolkit.version(),
        )
        entry = cache.lookup(key)
        if entry is not None and quantization_accepted(
            entry.metadata.agreement, settings.min_agreement
        ):
            try:
                classifier = _from_cache(entry, settings, toolkit)
            except Exception as error:  # a damaged IR: quantize again
                logger.warning("cache entry %s unusable (%s): quantizing again", entry, error)
            else:
                warn_if_random_weights(settings.model_path, settings.weights)
                return classifier
    converted = _float32_conversion(settings, toolkit, cache, source)
    images = read_calibration_set(
        files, converted.input_size, settings.max_upload_bytes, settings.max_image_pixels
    )
    quantized = quantize_gated(
        converted.model,
        images,
        preprocess_mode=settings.preprocess_mode,
        min_agreement=settings.min_agreement,
        compile_model=toolkit.compile,
        quantizer=quantizer
        if quantizer is not None
        else NNCFQuantizer(timeout_s=settings.quantization_timeout_s),
    )
    logger.info(
        "int8 model accepted (MODEL_MIN_AGREEMENT=%g): %s on %d held-out images",
        settings.min_agreement,
        describe_agreement(quantized.agreement),
        quantized.agreement.images,
    )
    classifier = Classifier(
        name=converted.name,
        engine=quantized.engine,
        input_size=converted.input_size,
        num_classes=converted.num_classes,
        preprocess_mode=settings.preprocess_mode,
        precision="int8",
        agreement=quantized.agreement,
        engine_reason=_int8_note(quantized.method),
    )
    if cache is not None and source is not None and key is not None:
        metadata = CacheMetadata(
            key=key,
            source=source[0],
            name=converted.name,
            input_size=converted.input_size,
            num_classes=converted.num_classes,
            preprocess_mode=settings.preprocess_mode,
            precision="int8",
            openvino_version=toolkit.version(),
            agreement=quantized.agreement,
            quantization=quantized.method,
            quantization_summary=(
                f"{len(images.calibration)} calibration images from "
                f"{settings.calibration_dir}; {quantized.summary}"
            ),
        )
        if _store(cache, metadata, toolkit, quantized.model):
            classifier = dataclasses.replace(classifier, cache="miss")
    return classifier


@dataclasses.dataclass(frozen=True)
class _Converted:
    """A verified float32 OpenVINO model (from the cache or converted now)."""

    model: Any
    name: str
    input_size: tuple[int, int]
    num_classes: int


def _float32_conversion(
    settings: Settings,
    toolkit: Toolkit,
    cache: ModelCache | None,
    source: tuple[str, str] | None,
) -> _Converted:
    """Return the float32 conversion int8 starts from: cached (no TensorFlow) or made now."""
    key = None
    if cache is not None and source is not None:
        key = cache_key(source[1], settings.preprocess_mode, "float32", toolkit.version())
        entry = cache.lookup(key)
        if entry is not None:
            try:
                model = toolkit.read(entry.xml_path)
            except Exception as error:  # a damaged IR: convert again
                logger.warning("cache entry %s unusable (%s): converting again", entry, error)
            else:
                logger.info("quantizing the cached float32 conversion %s", entry.xml_path.parent)
                meta = entry.metadata
                return _Converted(model, meta.name, meta.input_size, meta.num_classes)
    # Stored too: float32 serving, or int8 with other calibration images, starts from it.
    classifier, model = _convert_verify_store(settings, "float32", toolkit, cache, source, key)
    converted = _Converted(model, classifier.name, classifier.input_size, classifier.num_classes)
    del classifier
    gc.collect()  # the Keras reference and its graph are garbage now
    return converted


def _convert_verify_store(  # noqa: PLR0917
    settings: Settings,
    precision: str,
    toolkit: Toolkit,
    cache: ModelCache | None,
    source: tuple[str, str] | None,
    key: str | None,
) -> tuple[Classifier, Any]:
    """Convert the Keras model and verify it (else _Fallback); cache it when keyed."""
    reference = load_classifier(settings.replace(precision="float32"))
    try:
        classifier, model, agreement = _convert_and_verify(reference, precision, toolkit)
    except EngineError as error:
        raise _Fallback(error.message, reference) from None
    del reference
    if cache is not None and source is not None and key is not None:
        metadata = CacheMetadata(
            key=key,
            source=source[0],
            name=classifier.name,
            input_size=classifier.input_size,
            num_classes=classifier.num_classes,
            preprocess_mode=classifier.preprocess_mode,
            precision=classifier.precision,
            openvino_version=toolkit.version(),
            agreement=agreement,
        )
        _store(cache, metadata, toolkit, model)
    return classifier, model


def _store(cache: ModelCache, metadata: CacheMetadata, toolkit: Toolkit, model: Any) -> bool:
    """Cache a model; return whether it was stored (a read-only cache only logs)."""
    try:
        path = cache.store(metadata, lambda xml: toolkit.save(model, xml))
    except OSError as error:
        logger.warning("could not cache the converted model in %s: %s", cache.root, error)
        return False
    logger.info("cached the %s model in %s", metadata.precision, path)
    return True


def _nncf_version() -> str:
    """Return NNCF's installed version without importing it (a warm start need not)."""
    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            "MODEL_PRECISION=int8 needs NNCF (pip install 'onemodel[model]')"
        ) from None


def _int8_note(method: str) -> str:
    return f"int8 by NNCF {method}; unquantized operations compute in float32"


def _convert_and_verify(
    reference: Classifier, precision: str, toolkit: Toolkit
) -> tuple[Classifier, Any, Agreement]:
    """Convert the Keras reference, verify it in float32, compile it in ``precision``."""
    images = verification_images(reference.input_size)
    batch = preprocess(images, reference.preprocess_mode)
    expected = reference.engine.predict(batch)
    started = time.monotonic()
    try:
        model = toolkit.convert(reference.keras_model, reference.input_size)
        float32 = toolkit.compile(model, "float32")
        agreement = measure_agreement(expected, float32.predict(batch))
    except ModelLoadError as error:
        raise EngineError(error.message) from None
    except Exception as error:  # OpenVINO raises RuntimeError and plain Exception
        raise EngineError(f"OpenVINO failed: {type(error).__name__}: {error}") from None
    if not conversion_verified(agreement):
        raise EngineError(
            f"the converted model does not match Keras in float32 on {agreement.images} seeded "
            f"inputs: top-1 agreement {agreement.top1:.0%}, max |difference| "
            f"{agreement.max_abs_diff:.3g} (allowed: 100% and {MAX_ABS_DIFFERENCE:g})"
        )
    engine: Engine = float32
    if precision != "float32":
        engine = toolkit.compile(model, precision)
        # Reported, not gated: the user chose the lower precision.
        agreement = measure_agreement(expected, engine.predict(batch))
    logger.info(
        "converted %s to OpenVINO in %.1f s; %s against Keras float32 on %d inputs: top-1 "
        "agreement %.0f%%, max |difference| %.3g",
        reference.name,
        time.monotonic() - started,
        precision,
        agreement.images,
        agreement.top1 * 100,
        agreement.max_abs_diff,
    )
    classifier = dataclasses.replace(
        reference,
        engine=engine,
        precision=precision,
        agreement=agreement,
        engine_reason=_engine_note(engine, precision),
    )
    return classifier, model, agreement


def _from_cache(entry: CacheEntry, settings: Settings, toolkit: Toolkit) -> Classifier:
    started = time.monotonic()
    engine = toolkit.compile(toolkit.read(entry.xml_path), settings.precision)
    metadata = entry.metadata
    logger.info(
        "loaded the converted %s from the cache %s in %.2f s",
        metadata.name,
        entry.xml_path.parent,
        time.monotonic() - started,
    )
    return Classifier(
        name=metadata.name,
        engine=engine,
        input_size=metadata.input_size,
        num_classes=metadata.num_classes,
        preprocess_mode=metadata.preprocess_mode,
        precision=metadata.precision,
        agreement=metadata.agreement,
        engine_reason=(
            _int8_note(metadata.quantization)
            if metadata.precision == "int8"
            else _engine_note(engine, settings.precision)
        ),
        cache="hit",
    )


def _source(settings: Settings, cache: ModelCache) -> tuple[str, str] | None:
    """Return (description, content digest) of what the model is built from, or None.

    None (no caching) when a file is missing: loading then fails with its own clear error.
    """
    try:
        if settings.model_path != "vgg16":
            path = Path(settings.model_path)
            return str(path.resolve()), f"file sha256={cache.digest(path)}"
        weights = settings.weights
        if weights == "random":
            # Each cold start draws new random weights; the cache keeps the first draw.
            return "vgg16 weights=random", "vgg16 weights=random"
        if weights == "imagenet":
            cached = cached_imagenet_weights()
            if cached is None:
                return "vgg16 weights=imagenet", "vgg16 weights=imagenet (download)"
            weights = cached
        return f"vgg16 weights={weights}", f"vgg16 weights sha256={cache.digest(Path(weights))}"
    except OSError:
        return None


def _engine_note(engine: Engine, precision: str) -> str:
    computed = getattr(engine, "inference_precision", "")
    if precision == "bfloat16" and computed and "bf16" not in computed:
        return "this CPU has no bfloat16 units: OpenVINO computes in float32"
    return ""


def _on_tensorflow(classifier: Classifier, reason: str) -> Classifier:
    logger.info("engine tensorflow: %s", reason)
    return dataclasses.replace(classifier, engine_reason=reason)


def _why_not_openvino(explicit: bool, int8: bool = False) -> str:
    """Return why OpenVINO cannot or should not be used here ("" when it can)."""
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed (pip install 'onemodel[model]')" + (
            "; int8 needs it, TensorFlow serves float32" if int8 else ""
        )
    if int8 and importlib.util.find_spec("nncf") is None:
        return "int8 needs NNCF, which is not installed (pip install 'onemodel[model]')"
    if not explicit and _cuda_gpu_present():
        return "a CUDA GPU is present: TensorFlow uses it (OpenVINO's GPU plugin is Intel's)" + (
            " in float32 (int8 here is OpenVINO's)" if int8 else ""
        )
    return ""


def _cuda_gpu_present() -> bool:
    """Return whether an NVIDIA GPU is visible, without importing TensorFlow."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        return any(Path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        return False


def _openvino_toolkit(streams: int) -> Toolkit:
    from onemodel.model_server.engines.openvino import OpenVINOToolkit  # noqa: PLC0415

    return OpenVINOToolkit(streams=streams)
