"""Test harness: a real database per test run (SQLite or PostgreSQL), a Redis keyspace of its
own, a fresh app per test, and small builders for the records tests talk about.

``PORTICO_TEST_DATABASE=postgresql`` runs the suite on PostgreSQL (``PORTICO_TEST_POSTGRES_URL``,
default ``postgresql://postgres@127.0.0.1:5432/test``). A test that needs a service it cannot
reach fails in CI (``CI`` set) and is skipped, saying why, elsewhere.
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from jinja2 import BytecodeCache

from core import create_app, hookimpl, jobs
from core.models import MODELS, Business, Customer, db, init_db, migrate

POSTGRES_ADMIN_URL = os.environ.get("PORTICO_TEST_POSTGRES_URL",
                                    "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PORTICO_TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parent.parent


def need_service(reason: str):
    """Fail in CI, skip (saying why) on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(f"{reason}; start it to run this test")


def _postgres_database():
    import psycopg2

    name = f"portico_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as error:
        return None, None, str(error).strip()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]

    def drop():
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()

    return f"{base}/{name}", drop, None


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A migrated database of this test run's own, removed at the end."""
    kind = os.environ.get("PORTICO_TEST_DATABASE", "sqlite")
    drop = None
    if kind == "postgresql":
        url, drop, error = _postgres_database()
        if url is None:
            need_service(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'portico.db'}"
    app = create_app(config=_test_config(url, tmp_path_factory.mktemp("instance")))
    migrate(app)
    yield url
    if not db.is_closed():
        db.close()
    if drop:
        drop()


def _test_config(url, instance):
    return {"ENV": "testing", "SECRET_KEY": secrets.token_urlsafe(32), "DATABASE_URL": url,
            "REDIS_URL": None, "MAIL_OUTBOX": str(instance / "outbox.mbox"),
            "BASE_URL": "http://portal.test", "WTF_CSRF_ENABLED": True}


class _CompiledTemplates(BytecodeCache):
    """Templates compiled once per test run, not once per test's app: Jinja keys each by its
    name and checks its source's checksum, so pages render exactly as an app of their own
    would render them."""

    def __init__(self):
        self.compiled = {}

    def load_bytecode(self, bucket):
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket):
        self.compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = _CompiledTemplates()


def _empty_tables():
    """Delete every row: plugins' tables first (they point at the core's), then the core's,
    dependents before what they depend on. DELETE, not TRUNCATE: on these small tables it is
    ~100× faster on PostgreSQL, which counts when it runs before every test."""
    from peewee import sort_models

    plugin_tables = [t for t in db.get_tables() if t.startswith(("sandbox_", "stripe_"))]
    core_tables = [m._meta.table_name for m in reversed(sort_models(MODELS))]
    with db.atomic():
        for table in plugin_tables + core_tables:
            db.execute_sql(f'DELETE FROM "{table}"')


@pytest.fixture
def make_app(database_url, tmp_path):
    """Build an app on this run's database with test settings, plus ``config`` overrides."""

    def build(config=None, plugins=()):
        settings = _test_config(database_url, tmp_path)
        settings.update(config or {})
        app = create_app(config=settings, plugins=plugins)
        app.jinja_env.bytecode_cache = COMPILED_TEMPLATES
        return app

    init_db(database_url)
    _empty_tables()
    db.close()
    yield build
    if not db.is_closed():
        db.close()


@pytest.fixture
def app(make_app):
    """A fresh application with the installed plugins, inside an app context."""
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


MARKER, LEASE = "portico:test-db", "portico:test-lease"
LEASE_SECONDS = 1800


def claim_redis_database(base_url: str) -> str | None:
    """Claim a Redis database (1-15) for one test or benchmark run, or ``None`` if none is free.

    A database is free when it is empty, or when it holds Portico's test marker but no live
    lease: the leftovers of a run that was killed, flushed before reuse. Databases holding
    anything else are never touched. The lease expires by itself if the run dies.
    """
    import redis

    token = uuid.uuid4().hex
    for index in range(15, 0, -1):
        conn = redis.Redis.from_url(f"{base_url}/{index}")
        leftovers = conn.exists(MARKER) and not conn.exists(LEASE)
        if (conn.dbsize() == 0 or leftovers) and conn.set(LEASE, token, nx=True, ex=LEASE_SECONDS):
            if leftovers:
                conn.flushdb()
                conn.set(LEASE, token, ex=LEASE_SECONDS)
            conn.set(MARKER, "1")
            return f"{base_url}/{index}"
    return None


@pytest.fixture(scope="session")
def redis_url():
    """A Redis database of this test run's own (claimed, then emptied at the end)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        need_service(f"Redis is not reachable at {REDIS_URL}: {error}")
    url = claim_redis_database(REDIS_URL)
    if url is None:
        need_service("no Redis database (1-15) is free for this test run")
    yield url
    redis.Redis.from_url(url).flushdb()


# --- Builders -------------------------------------------------------------------------------


@pytest.fixture
def business(app):
    return Business.create(name="Acme Software", legal_name="Acme Software Ltd",
                           address="1 Main Street\n75001 Paris\nFrance",
                           support_email="support@acme.test")


@pytest.fixture
def customer(business):
    return Customer.create(business=business, mode="test", email="ann@example.com",
                           name="Ann Example")


class Heard:
    """A notifier plugin that keeps every notification it hears, secrets (links) included."""

    name = "heard"

    def __init__(self):
        self.notifications = []

    @hookimpl
    def notify(self, notification, app):
        self.notifications.append(notification)

    def of_type(self, type_):
        return [n for n in self.notifications if n.type == type_]

    def links(self, type_="customer.sign_in_link"):
        return [n.secrets["link"] for n in self.of_type(type_)]


@pytest.fixture
def heard():
    """What notifiers hear; build the app with ``make_app(plugins=[heard])``."""
    return Heard()


@pytest.fixture
def fresh_database_url(tmp_path):
    """A factory of empty databases of this run's kind, dropped after the test."""
    drops = []

    def make(name="fresh"):
        if os.environ.get("PORTICO_TEST_DATABASE", "sqlite") == "postgresql":
            url, drop, error = _postgres_database()
            if url is None:
                need_service(f"PostgreSQL is not reachable: {error}")
            drops.append(drop)
            return url
        return f"sqlite:///{tmp_path / (name + '.db')}"

    yield make
    if not db.is_closed():
        db.close()
    for drop in drops:
        drop()


@pytest.fixture
def cli_env(database_url, tmp_path, monkeypatch):
    """Environment for running the ``portico`` command against this run's database."""
    env = {"PORTICO_ENV": "testing", "PORTICO_DATABASE_URL": database_url,
           "PORTICO_INSTANCE_PATH": str(tmp_path), "PORTICO_BASE_URL": "http://portal.test",
           "PORTICO_MAIL_OUTBOX": str(tmp_path / "outbox.mbox")}
    for name in [n for n in os.environ if n.startswith("PORTICO_") and n not in env]:
        if name not in ("PORTICO_DISABLED_PLUGINS",):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on a free loopback port, in a background thread."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (its own browser download cannot work here)."""
    import shutil

    executable = shutil.which("chromium")
    if executable is None:
        need_service("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context and page; ``screenshot(name)`` saves under test-output/."""
    from pathlib import Path

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    folder = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"

    def screenshot(name, width=None):
        folder.mkdir(parents=True, exist_ok=True)
        for size in ([width] if width else [375, 1280]):
            page.set_viewport_size({"width": size, "height": 900})
            page.screenshot(path=str(folder / f"{name}-{size}.png"), full_page=True)

    page.screenshot_as = screenshot
    yield page
    context.close()


@pytest.fixture
def product(business):
    """A monthly EUR plan with 20 % VAT."""
    from core.models import Product

    return Product.create(business=business, mode="test", name="Pro", price=1500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)


@pytest.fixture
def save_card(app):
    """Save a sandbox test card (number or ``pm_card_…`` token) for a customer."""
    from core.models import PaymentMethod
    from core.plugins import registry

    def save(customer, source="pm_card_visa"):
        card = registry(app).provider("sandbox").tokenize(customer=customer, source=source)
        return PaymentMethod.save_card(customer, "sandbox", card)

    return save


@pytest.fixture
def subscribe(save_card):
    """An active subscription (its first charge settled in-process, or none in a free
    trial: the payment is then ``None``), with a saved card."""
    from core import billing

    def subscribe(customer, product, source="pm_card_visa", **kwargs):
        sub, payment = billing.create_subscription(customer, product, save_card(customer, source),
                                                   **kwargs)
        return sub.refresh(), payment and payment.refresh()

    return subscribe


@pytest.fixture
def on_hold(customer, product, subscribe, save_card):
    """A subscription put on hold by a declined renewal, one month after it started."""
    import time_machine

    from core import billing

    def make():
        sub, _ = subscribe(customer, product)
        billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()
        return sub.refresh()

    return make


def dies_with_this_run():
    """``preexec_fn`` for a long-running worker process: the kernel stops it (SIGKILL) when
    the test run that started it dies, killed or crashed before its fixtures could, so no
    orphan keeps writing to a Redis database that a later run claims and empties."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_work_horses(queue_name: str):
    """Kill what is left of the workers of ``queue_name``: RQ forks each job into a work horse
    with a process group of its own, which outlives a worker that a test killed and would
    write to Redis after this run has emptied its database."""
    marker = f"PORTICO_QUEUE_NAME={queue_name}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


@pytest.fixture
def redis_app(make_app, redis_url, cli_env):
    """The app with a real RQ queue of its own, and how to run a real worker process on it."""
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": queue_name,
                    "MAIL_OUTBOX": cli_env["PORTICO_MAIL_OUTBOX"]})
    env = {**os.environ, **cli_env, "PORTICO_REDIS_URL": redis_url, "PORTICO_QUEUE_NAME": queue_name}

    started = []

    def worker(*args, **kwargs):
        process = subprocess.Popen([sys.executable, "-m", "core.cli", "worker", *args], cwd=ROOT,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=dies_with_this_run, **kwargs)
        started.append(process)
        return process

    app.worker = worker
    yield app
    for process in started:  # never leave a worker behind, whatever the test did
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    kill_work_horses(queue_name)
    with app.app_context():
        jobs.queue().empty()


@pytest.fixture
def reset_database(make_app):
    """Empty every table (for tests that run many independent examples, like Hypothesis)."""
    return _empty_tables


class MerchantApi:
    """The merchant API as a merchant's server calls it: ``api.post("/customers", {...})``
    sends JSON with the bearer key and returns the response."""

    def __init__(self, client, key):
        self.client, self.key = client, key

    def __call__(self, method, path, body=None, **kwargs):
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return self.client.open("/api" + path, method=method, json=body, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self("GET", path, **kwargs)

    def post(self, path, body=None, **kwargs):
        return self("POST", path, body, **kwargs)

    def patch(self, path, body=None, **kwargs):
        return self("PATCH", path, body, **kwargs)

    def delete(self, path, **kwargs):
        return self("DELETE", path, **kwargs)


@pytest.fixture
def api(client, business):
    """The merchant API with a test-mode key of ``business``."""
    from core.auth import create_api_key

    return MerchantApi(client, create_api_key(business, "test")[1])


# --- A real SMTP server ---------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on (aiosmtpd's own port=0 fails its readiness check)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Inbox:
    """An aiosmtpd handler keeping what it receives; ``rcpt_reply`` refuses recipients."""

    def __init__(self):
        self.envelopes = []
        self.rcpt_reply = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self):
        return [message_from_bytes(e.content, policy=policy.default) for e in self.envelopes]


@pytest.fixture
def inbox():
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives; it
    offers SMTPUTF8 (RFC 6531)."""
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def ascii_inbox():
    """Like ``inbox``, but a server that does not offer SMTPUTF8: ASCII addresses only."""
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


# --- A fake Stripe --------------------------------------------------------------------------

LOCALSTRIPE = """
import sys

import aiohttp.web
import localstripe.resources
import localstripe.server

localstripe.resources.Store.dump_to_disk = lambda store: None  # from scratch, kept in memory
aiohttp.web.run_app(localstripe.server.app, host="127.0.0.1", port=int(sys.argv[1]),
                    print=lambda line: print(line, flush=True))
"""


@pytest.fixture(scope="session")
def localstripe():
    """localstripe (a fake Stripe API, webhooks and Stripe.js) started from scratch on a free
    loopback port for this run; returns its address."""
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", LOCALSTRIPE, str(port)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if "Running on" not in server.stdout.readline():  # printed once it listens
        server.kill()
        need_service("localstripe cannot start (make test installs it)")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)




@pytest.fixture
def dns(monkeypatch):
    """Resolve the names put in the returned dict to the address given, or to each address of a
    list in turn (the last one from then on); other names as usual."""
    names, resolve = {}, socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            address = names[host]
            if isinstance(address, list):
                address = address.pop(0) if len(address) > 1 else address[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.fixture
def served(app, live_server):
    """The live server, with links e-mailed for its own address."""
    app.config["BASE_URL"] = live_server.url
    return live_server.url


def csp_violations(page) -> list[str]:
    """Console messages of the page reporting a blocked script, style or frame."""
    found = []
    page.on("console", lambda message: found.append(message.text)
            if "Content Security Policy" in message.text else None)
    return found


def text(answer) -> str:
    """A page's visible words, tags removed and spaces squeezed."""
    return " ".join(re.sub(r"<[^>]+>", " ", answer.text).split())


def csrf_token(html: str) -> str:
    """The CSRF token of the (first) form on a page, to post it as a browser would."""
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)[1]
