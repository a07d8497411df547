"""Compare float32 and bfloat16 predictions on the same 120+ varied images (``make precision``).

Two models, because no pretrained ImageNet weights can be downloaded here:
  * ``trained``: a small CNN trained in a minute to tell 12 real photos (shipped with
    scikit-image) apart under heavy augmentation; confident outputs, like a real classifier.
  * ``vgg16-random``: VGG16 with random weights: the same compute as ImageNet VGG16, but
    near-uniform outputs, so its top-1 is fragile by construction (reported for the
    probability difference, which is what bfloat16 rounding changes).
For each: top-1 agreement between the precisions, the largest absolute probability
difference, and (trained model) each precision's accuracy. Writes bench/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "logo",
    "brick",
    "camera",
    "coins",
)
ROOT = Path(__file__).resolve().parents[1]


def _photos() -> list[np.ndarray]:
    import skimage.data  # noqa: PLC0415

    photos = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return photos


def _augment(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop, flip, rotation, brightness and colour shift, resized to size."""
    height, width = photo.shape[:2]
    scale = rng.uniform(0.45, 1.0)
    crop_h, crop_w = max(8, int(height * scale)), max(8, int(width * scale))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    image = photo[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-25, 25), 1.0)
    image = cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    shifted = image.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25, 3)
    return np.clip(shifted, 0, 255).astype(np.uint8)


def _dataset(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    photos = _photos()
    labels = rng.integers(0, len(photos), count)
    images = np.stack([_augment(photos[label], rng, size) for label in labels])
    return images, labels


def _compare(full: np.ndarray, half: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "images": int(full.shape[0]),
        "top1_agreement": float((full.argmax(1) == half.argmax(1)).mean()),
        "max_abs_probability_difference": float(np.abs(full - half).max()),
        "mean_abs_probability_difference": float(np.abs(full - half).mean()),
    }
    if labels is not None:
        result["accuracy_float32"] = float((full.argmax(1) == labels).mean())
        result["accuracy_bfloat16"] = float((half.argmax(1) == labels).mean())
    return result


def _trained_model(keras: Any, size: int, train: tuple[np.ndarray, np.ndarray], epochs: int) -> Any:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(len(PHOTOS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train[0].astype(np.float32), train[1], epochs=epochs, batch_size=32, verbose=0)
    return model


def main() -> None:
    """Run the comparison and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "precision.json"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415

    from onemodel.model_server.model import cpu_bfloat16_flags, rebuild_with_policy  # noqa: PLC0415
    from onemodel.model_server.preprocessing import preprocess  # noqa: PLC0415

    started = time.time()
    report: dict[str, Any] = {"cpu_bfloat16": cpu_bfloat16_flags(), "models": {}}

    size = 96
    train = _dataset(1200, size, seed=1)
    test_images, test_labels = _dataset(args.images, size, seed=2)
    trained = _trained_model(keras, size, train, args.epochs)
    trained_half = rebuild_with_policy(keras, trained, "mixed_bfloat16")
    full = np.asarray(trained.predict(test_images.astype(np.float32), batch_size=16, verbose=0))
    half = np.asarray(
        trained_half.predict(test_images.astype(np.float32), batch_size=16, verbose=0)
    )
    report["models"]["trained"] = _compare(full, half, test_labels)

    vgg_images, _ = _dataset(args.images, 224, seed=4)
    keras.utils.set_random_seed(5)
    vgg = keras.applications.VGG16(weights=None)
    vgg_half = rebuild_with_policy(keras, vgg, "mixed_bfloat16")
    batch = preprocess(vgg_images, "caffe")
    full = np.asarray(vgg.predict(batch, batch_size=16, verbose=0))
    half = np.asarray(vgg_half.predict(batch, batch_size=16, verbose=0))
    report["models"]["vgg16-random"] = _compare(full, half, None)
    report["seconds"] = round(time.time() - started, 1)

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
