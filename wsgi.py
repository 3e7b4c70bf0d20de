"""The WSGI entry point: ``gunicorn wsgi:app``. Configuration comes from ``PORTICO_*`` variables."""

import sys

from core import ConfigError, create_app

try:
    app = create_app()
except ConfigError as error:
    sys.exit(f"portico: {error}")
