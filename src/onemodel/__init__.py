"""onemodel: one Keras image classifier process behind many Gunicorn workers.

The package shows its processes, one subpackage per role:

- ``web``: the Flask app in every Gunicorn worker (never TensorFlow, never ``model_server``);
- ``model_server``: the one process that loads the model and batches predictions;
- ``master``: the Gunicorn master's settings, hooks and private model-server supervisor;
- ``boundary``: both ends of the manager socket between workers and the model server.

``settings`` and ``errors`` are shared by all of them.
"""

__version__ = "0.1.0"
