"""The WSGI entry point of a checkout: ``gunicorn wsgi:app`` (installed: ``core.wsgi:app``)."""

from core.wsgi import app

__all__ = ["app"]
