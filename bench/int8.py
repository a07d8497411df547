"""int8 against float32 on OpenVINO, in one process: speed (interleaved) and agreement.

    python bench/int8.py --model efficientnetb0 --rounds 5 --seconds 3
    python bench/int8.py --model trained   # a small net trained here: a meaningful agreement

Models: ``efficientnetb0`` and ``vgg16`` from ``keras.applications`` with random weights (the
same compute as trained ones, so the speed is real; their top-1 on photos is noise, so the
agreement is not meaningful) and ``trained``: a small conv net trained in a few seconds to
tell scikit-image's photos apart from crops of them, confident on some crops and unsure on
others, as a real model is. Calibration and held-out images are seeded crops of those
photos, decoded and resized as uploads are; quantization is onemodel's own gate
(``quantize_gated``) with MODEL_MIN_AGREEMENT 0 so it always reports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from onemodel.model_server.calibration import CalibrationSet  # noqa: E402
from onemodel.model_server.preprocessing import preprocess  # noqa: E402
from onemodel.model_server.quantization import NNCFQuantizer, quantize_gated  # noqa: E402
from onemodel.model_server.verification import describe_agreement  # noqa: E402
from onemodel.web.imaging import prepare_image  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")


def crops(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` JPEG-round-tripped photo crops (N, size, size, 3) and their photo."""
    import skimage.data  # noqa: PLC0415

    photos = [np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]) for name in PHOTOS]
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(count):
        label = int(rng.integers(len(photos)))
        photo = photos[label]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 5, min(height, width) + 1))
        top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR))
        assert ok
        # Decoded and resized exactly as an upload is.
        images.append(prepare_image(jpeg.tobytes(), (size, size), 50_000_000))
        labels.append(label)
        del index
    return np.stack(images), np.asarray(labels)


def build(name: str, keras: Any, size: int) -> tuple[Any, str]:
    """Return (Keras model, preprocessing mode)."""
    if name == "efficientnetb0":
        return keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3)), "none"
    if name == "vgg16":
        return keras.applications.VGG16(weights=None), "caffe"
    keras.utils.set_random_seed(1)
    images, labels = crops(600, size, seed=100)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(16, 3, strides=2, activation="relu"),
            layers.Conv2D(32, 3, strides=2, activation="relu"),
            layers.Conv2D(64, 3, strides=2, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(len(PHOTOS), activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images.astype(np.float32), labels, epochs=8, batch_size=32, verbose=0)
    return model, "none"


def throughput(engine: Any, batch: np.ndarray, seconds: float) -> float:
    """Return images per second of ``engine.predict`` on ``batch`` for about ``seconds``."""
    engine.predict(batch)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        engine.predict(batch)
        count += len(batch)
    return count / (time.perf_counter() - started)


def main() -> None:
    """Quantize one model, then time float32 and int8 in alternating rounds."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", default="efficientnetb0", choices=("efficientnetb0", "vgg16", "trained")
    )
    parser.add_argument("--images", type=int, default=100, help="calibration + held-out crops")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415

    from onemodel.model_server.engines.openvino import OpenVINOToolkit  # noqa: PLC0415

    size = 224 if args.model != "trained" else 64
    started = time.monotonic()
    model, mode = build(args.model, keras, size)
    built_s = time.monotonic() - started
    toolkit = OpenVINOToolkit()
    started = time.monotonic()
    converted = toolkit.convert(model, (size, size))
    convert_s = time.monotonic() - started
    images, _ = crops(args.images, size, seed=7)
    held = np.arange(len(images)) % 5 == 4
    started = time.monotonic()
    result = quantize_gated(
        converted,
        CalibrationSet(images[~held], images[held], skipped=0),
        preprocess_mode=mode,
        min_agreement=0.0,
        compile_model=toolkit.compile,
        quantizer=NNCFQuantizer(),
    )
    quantize_s = time.monotonic() - started
    float32 = toolkit.compile(converted, "float32")
    keras_scores = np.asarray(model.predict_on_batch(preprocess(images[held], mode)))
    float32_vs_keras = np.abs(float32.predict(preprocess(images[held], mode)) - keras_scores).max()
    batch = preprocess(images[: args.batch], mode)
    rows: list[dict[str, float]] = []
    for round_index in range(args.rounds):
        order = [("float32", float32), ("int8", result.engine)]
        if round_index % 2:
            order.reverse()
        measured = {label: throughput(engine, batch, args.seconds) for label, engine in order}
        measured["ratio"] = measured["int8"] / measured["float32"]
        measured["load1"] = os.getloadavg()[0]
        rows.append(measured)
        print(json.dumps({"round": round_index, **{k: round(v, 2) for k, v in measured.items()}}))
    summary = {
        "model": args.model,
        "batch": args.batch,
        "float32_img_s": statistics.median(row["float32"] for row in rows),
        "int8_img_s": statistics.median(row["int8"] for row in rows),
        "ratio_median": statistics.median(row["ratio"] for row in rows),
        "ratios": [round(row["ratio"], 2) for row in rows],
        "load1": [round(row["load1"], 1) for row in rows],
        "held_out": describe_agreement(result.agreement),
        "method": result.method,
        "summary": result.summary,
        "float32_vs_keras_max_diff": float(float32_vs_keras),
        "build_s": round(built_s, 1),
        "convert_s": round(convert_s, 1),
        "quantize_s": round(quantize_s, 1),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
