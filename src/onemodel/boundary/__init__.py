"""The boundary between web workers and the model server: both ends of the manager socket.

Runs in both processes (and in the container probe). It may import only the standard
library, NumPy, ``onemodel.settings`` and ``onemodel.errors``: never Flask, never
TensorFlow, never ``onemodel.web`` or ``onemodel.model_server``. What crosses the socket is
declared in ``contract``: bytes, NumPy arrays, builtins, errors and ``ModelInfo``.
"""
