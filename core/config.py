"""Configuration: built-in defaults, then ``instance/portico.cfg``, then ``PORTICO_*`` variables.

Every setting can come from the environment: ``PORTICO_DATABASE_URL`` sets ``DATABASE_URL``,
``PORTICO_STRIPE_SECRET_KEY`` sets a plugin's ``STRIPE_SECRET_KEY``. Values are read with the
type of their default (integers, booleans ``1/true/yes``, comma-separated lists).
"""

import ipaddress
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped(folder: str) -> Path:
    """A folder Portico ships (``templates``, ``migrations``): ``core/<folder>`` in an installed
    package, the checkout's top-level ``<folder>`` otherwise (``setup.py`` maps one to the other)."""
    inside = PACKAGE / folder
    return inside if inside.is_dir() else PACKAGE.parent / folder


ENV_PREFIX = "PORTICO_"
CONFIG_FILE = "portico.cfg"

DEFAULTS = {
    "ENV": "production",  # production, development or testing
    "SECRET_KEY": None,
    "DATABASE_URL": None,  # default: sqlite:///<instance>/portico.db
    "DATABASE_POOL_SIZE": 20,  # connections kept per process (0: no limit)
    "DATABASE_POOL_RECYCLE": 300,  # seconds before a connection is closed and opened anew
    "DATABASE_POOL_WAIT": 10,  # seconds to wait for a free connection when all are in use
    "REDIS_URL": None,  # without it, jobs run in-process
    "QUEUE_NAME": "portico",
    "BASE_URL": "http://127.0.0.1:8000",  # the canonical address used in e-mailed links
    "DISABLED_PLUGINS": [],
    "MAIL_FROM": "Portico <no-reply@localhost>",
    "SMTP_HOST": None,  # without it, e-mails go to the log outbox
    "SMTP_PORT": 587,
    "SMTP_USERNAME": None,
    "SMTP_PASSWORD": None,
    "SMTP_STARTTLS": True,
    "SMTP_SSL": False,
    "SMTP_TIMEOUT": 15,
    "MAIL_OUTBOX": None,  # default: <instance>/outbox.mbox
    "MAGIC_LINK_TTL": 24 * 3600,
    "SESSION_TTL": 24 * 3600,
    "SESSION_IDLE_TTL": 30 * 60,  # a session unused this long ends
    "API_SESSION_LINK_TTL": 10 * 60,  # a portal-session link from the API, if not visited
    "EMAIL_CHANGE_FRESHNESS": 15 * 60,  # an e-mail change needs a sign-in this recent
    "SIGN_IN_LIMIT_PER_EMAIL": "1 per minute; 5 per hour",  # sign-in e-mails to one address
    "SIGN_IN_LIMIT_PER_IP": "20 per hour",  # sign-in link requests from one address
    "EMAIL_LIMIT_PER_CUSTOMER": "3 per 10 minutes; 10 per day",  # e-mails a customer is sent on request
    "EMAIL_LIMIT_PER_IP": "20 per hour",  # e-mails asked for from one address (signed in)
    "TOKEN_FAILURE_LIMIT_PER_IP": "30 per hour",  # invalid sign-in links opened from one IP
    "DASHBOARD_SIGN_IN_LIMIT": "10 per 15 minutes",  # failed dashboard sign-ins per IP and e-mail
    "API_KEY_FAILURE_LIMIT_PER_IP": "20 per minute; 100 per hour",  # calls with an unknown API key
    "API_RATE_LIMIT": "50 per second; 1000 per minute",  # merchant API calls per API key
    "API_PUBLIC_RATE_LIMIT": "20 per second; 300 per minute",  # /licenses/* calls per IP address
    "MAX_CONTENT_LENGTH": 256 * 1024,  # bytes a request body may have, chunked or not
    "PROXY_HOPS": 0,  # reverse proxies in front of Portico whose X-Forwarded-* headers to trust
    "RENEWAL_SWEEP_INTERVAL": 60,
    "RENEWAL_BATCH_SIZE": 50,  # renewals per job (each still its own transaction)
    "CHARGE_WAIT_WINDOW": 23 * 3600,  # seconds a charge may wait (3-D Secure, a lost answer)
    "PRICE_CHANGE_NOTICE_DAYS": 30,  # subscribers are told a new price at least this long ahead
    "INVOICE_PDF_AHEAD": True,  # render each invoice's PDF when issued, not at first download
    "PAYMENT_PROVIDER_TEST": "sandbox",  # the provider that saves new cards in test mode
    "PAYMENT_PROVIDER_LIVE": None,  # … and in live mode (e.g. "stripe", from its plugin)
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": False,  # deliver to loopback/private addresses (development)
    "LOG_FORMAT": "text",  # text or json (one JSON object per line)
    "METRICS_TOKEN": None,  # /metrics answers "Authorization: Bearer <this>"…
    "METRICS_NETWORKS": [],  # … or these networks (CIDR, e.g. 10.0.0.0/8); neither: no /metrics
}

DEV_SECRET = "dev-only-secret-key-never-use-in-production"


class ConfigError(Exception):
    """Portico cannot start with this configuration; the message says what to fix."""


def _coerce(name: str, raw: str, default):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} expects a whole number, got {raw!r}") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def from_environ(environ=None) -> dict:
    """The settings named by ``PORTICO_*`` variables, typed like their defaults."""
    environ = os.environ if environ is None else environ
    settings = {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "INSTANCE_PATH":
            key = name[len(ENV_PREFIX):]
            settings[key] = _coerce(name, raw, DEFAULTS.get(key))
    return settings


def load(app, overrides=None, strict=True):
    """Fill ``app.config`` in order of precedence and check what must hold before start-up
    (``strict=False`` leaves the secret to ``portico check``, which reports it)."""
    app.config.update(DEFAULTS)
    app.config.from_pyfile(os.path.join(app.instance_path, CONFIG_FILE), silent=True)
    app.config.update(from_environ())
    app.config.update(overrides or {})
    cfg = app.config
    if cfg["ENV"] not in ("production", "development", "testing"):
        raise ConfigError(f"PORTICO_ENV must be production, development or testing, not {cfg['ENV']!r}")
    cfg["TESTING"] = cfg["ENV"] == "testing"
    if cfg["LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError(f"PORTICO_LOG_FORMAT must be text or json, not {cfg['LOG_FORMAT']!r}")
    for network in cfg["METRICS_NETWORKS"]:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"PORTICO_METRICS_NETWORKS: {network!r} is not a network "
                              f"such as 10.0.0.0/8") from None
    if not cfg["SECRET_KEY"]:
        if cfg["ENV"] != "production":
            cfg["SECRET_KEY"] = DEV_SECRET
        elif strict:
            raise ConfigError("PORTICO_SECRET_KEY is not set: production needs a random secret "
                              "of at least 32 characters (python -c 'import secrets; "
                              "print(secrets.token_urlsafe(48))')")
    elif (cfg["ENV"] == "production" and strict
          and (len(cfg["SECRET_KEY"]) < 32 or cfg["SECRET_KEY"] == DEV_SECRET)):
        raise ConfigError("PORTICO_SECRET_KEY is too weak for production: use a random value "
                          "of at least 32 characters")
    if not cfg["DATABASE_URL"] or not cfg["MAIL_OUTBOX"]:  # the defaults live in the instance folder
        os.makedirs(app.instance_path, exist_ok=True)
    if not cfg["DATABASE_URL"]:
        cfg["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "portico.db")
    if not cfg["MAIL_OUTBOX"]:
        cfg["MAIL_OUTBOX"] = os.path.join(app.instance_path, "outbox.mbox")
    cfg["BASE_URL"] = cfg["BASE_URL"].rstrip("/")
    production = cfg["ENV"] == "production"
    cfg.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
               SESSION_COOKIE_SECURE=production,
               SESSION_COOKIE_NAME="__Host-portico" if production else "portico")
