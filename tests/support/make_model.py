"""Build and save a small deterministic Keras image classifier (a script: no TF in pytest)."""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    """Save a seeded conv net with the given input size and class count."""
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fragile",
        action="store_true",
        help="int8-fragile: the class scores differ by much less than the weights' scale",
    )
    args = parser.parse_args()
    save_model(args.path, args.size, args.classes, args.seed, args.fragile)


def save_model(path: str, size: int, classes: int, seed: int, fragile: bool = False) -> None:
    """Build and save the seeded conv net (imports Keras: call it where TensorFlow may load)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(classes)
    x = dense(x)
    outputs = keras.layers.Activation("softmax", dtype="float32")(x)
    if fragile:
        # Every class shares a large common weight and differs by 1 % of it: int8's
        # per-channel rounding of the weights (about 0.4 % of their range) then reorders
        # the classes of many images, as a real model's ambiguous images are reordered.
        rng = np.random.default_rng(seed)
        kernel, bias = dense.get_weights()
        common = rng.uniform(1.0, 2.0, size=(kernel.shape[0], 1))
        kernel = common + 0.01 * rng.standard_normal(kernel.shape)
        dense.set_weights([kernel.astype("float32"), np.zeros_like(bias)])
    keras.Model(inputs, outputs, name="fragile" if fragile else "tiny").save(path)


if __name__ == "__main__":
    main()
