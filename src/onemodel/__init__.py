"""onemodel: one Keras image classifier process behind many Gunicorn workers."""

__version__ = "0.1.0"
