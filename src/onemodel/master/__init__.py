"""The Gunicorn master: its settings, its hooks and the private model server it supervises.

Runs in the Gunicorn master process (``gunicorn.conf.py`` re-exports ``master.config``). It
may import ``onemodel.boundary``, ``onemodel.settings`` and ``onemodel.errors``, and
``onemodel.web.metrics`` for the multiprocess metrics directory; never TensorFlow and never
the Flask app: the master must not build anything a forked worker would inherit.
"""
