"""The web tier: the Flask app every Gunicorn worker runs.

Runs in the Gunicorn worker processes. It may import Flask, OpenCV, NumPy,
prometheus-client, ``onemodel.boundary``, ``onemodel.settings`` and ``onemodel.errors``;
never TensorFlow/Keras and nothing under ``onemodel.model_server`` (a unit test checks it):
forked TensorFlow hangs, and one model per worker multiplies memory.
"""
