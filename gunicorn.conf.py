"""Gunicorn configuration for onemodel: ``gunicorn -c gunicorn.conf.py wsgi:app``.

A thin door: every setting and hook is declared, with its comment, in
``src/onemodel/master/config.py``. Command-line flags override them.
"""

from onemodel.master.config import *  # noqa: F403
