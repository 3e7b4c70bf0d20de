"""The WSGI entry point: ``gunicorn 'core.wsgi:app'`` from any directory once Portico is
installed (``wsgi.py`` at the top of a checkout says the same). Configuration comes from
``PORTICO_*`` variables; a bad one stops start-up with one line."""

import sys

from core import ConfigError, create_app
from core.monitoring import configure_logging

try:
    app = create_app()
except ConfigError as error:
    sys.exit(f"portico: {error}")
configure_logging(app)
