"""Build and save a small deterministic Keras image classifier (a script: no TF in pytest)."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    """Save a seeded conv net with the given input size and class count."""
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((args.size, args.size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(args.classes)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32")(x)
    keras.Model(inputs, outputs, name="tiny").save(args.path)


if __name__ == "__main__":
    main()
