"""Portico: a self-hosted customer portal with the billing core under it.

``create_app`` builds the Flask application: configuration, database, job queue, plugins
and the blueprints of each area. Plugins import ``hookimpl`` from here.
"""

import os

from flask import Flask

from core import api, auth, dashboard, i18n, jobs, monitoring, portal, signin, web
from core import config as configuration
from core import plugins as plugin_system
from core.config import PACKAGE, ConfigError, shipped
from core.hookspecs import hookimpl
from core.models import UnsupportedDatabase, init_db, release

__all__ = ["create_app", "hookimpl", "ConfigError"]


def create_app(config=None, plugins=(), strict=True):
    """Build the application. ``config`` overrides every other source; ``plugins`` are extra
    plugin objects registered beside the installed ones (handy in tests).

    Raises ``ConfigError`` with a one-line message when the configuration cannot work;
    ``strict=False`` (for ``portico check``) tolerates a weak secret and an unreachable Redis,
    which the checks then report.
    """
    instance_path = os.path.abspath(os.environ.get("PORTICO_INSTANCE_PATH") or "instance")
    app = Flask("portico", root_path=str(PACKAGE), template_folder=str(shipped("templates")),
                instance_path=instance_path)
    configuration.load(app, config, strict)
    try:
        init_db(app.config["DATABASE_URL"], app.config["DATABASE_POOL_SIZE"],
                app.config["DATABASE_POOL_RECYCLE"], app.config["DATABASE_POOL_WAIT"])
    except UnsupportedDatabase as error:
        raise ConfigError(str(error)) from None
    jobs.init_app(app, strict)
    monitoring.init_app(app)
    plugin_system.init_app(app, plugins)
    web.init_app(app)
    auth.init_app(app)
    i18n.init_app(app)
    for area in (signin, portal, dashboard, api):
        app.register_blueprint(area.bp)
    app.extensions["portico.json_errors"] = api.error_response  # errors under /api

    app.teardown_appcontext(lambda _exc: release())

    return app
