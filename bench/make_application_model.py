"""Build and save a keras.applications classifier with seeded random weights (224x224, 1000)."""

from __future__ import annotations

import argparse
import os

# The architectures the engine panels may use: small models of the kind people deploy
# (depthwise convolutions). Random weights cost the same compute as trained ones.
ARCHITECTURES = {
    "efficientnetb0": "EfficientNetB0",
    "mobilenetv3small": "MobileNetV3Small",
    "mobilenetv3large": "MobileNetV3Large",
}


def main() -> None:
    """Save the architecture, with seeded random weights, to the given .keras path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("architecture", choices=sorted(ARCHITECTURES))
    parser.add_argument("path")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415  (deferred: TensorFlow only in this subprocess)

    keras.utils.set_random_seed(7)
    build = getattr(keras.applications, ARCHITECTURES[args.architecture])
    # The model takes RGB 0-255 pixels: its own Rescaling/Normalization layers come first.
    model = build(weights=None, input_shape=(224, 224, 3), classes=1000)
    temporary = f"{args.path}.tmp.keras"
    model.save(temporary)
    os.replace(temporary, args.path)  # a killed build leaves no half-written model


if __name__ == "__main__":
    main()
