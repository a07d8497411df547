"""The model server: the one process that loads the model, batches and predicts.

Runs in its own process (``python -m onemodel.model_server`` or ``model_server.py``). The
only part of onemodel that imports TensorFlow/Keras (lazily, in ``model``). It may import
``onemodel.boundary``, ``onemodel.settings`` and ``onemodel.errors``; of ``onemodel.web``
only its pure ``imaging`` (int8 calibration images are decoded exactly as uploads are),
never ``onemodel.master``.
"""
