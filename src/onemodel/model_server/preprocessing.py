"""Model input normalisation (caffe, tf, torch, none) in NumPy, applied in the model server."""

from __future__ import annotations

import numpy as np

_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(images: np.ndarray, mode: str) -> np.ndarray:
    """Turn RGB uint8 images (N, H, W, 3) into the float32 input a model expects.

    The modes match ``keras.applications.imagenet_utils.preprocess_input``:
    ``caffe`` flips RGB to BGR and subtracts the ImageNet mean (VGG16, ResNet50), ``tf``
    scales to [-1, 1], ``torch`` scales to [0, 1] and normalises with the ImageNet mean and
    standard deviation, and ``none`` passes RGB 0-255 floats to models that normalise inside.
    """
    batch = images.astype(np.float32)
    if mode == "caffe":
        return batch[..., ::-1] - _CAFFE_BGR_MEAN
    if mode == "tf":
        return batch / 127.5 - 1.0
    if mode == "torch":
        return (batch / 255.0 - _TORCH_MEAN) / _TORCH_STD
    if mode == "none":
        return batch
    raise ValueError(f"unknown preprocessing mode {mode!r}")
