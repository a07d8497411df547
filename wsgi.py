"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``. Builds the app, nothing else."""

from onemodel.web.app import create_app

app = create_app()
