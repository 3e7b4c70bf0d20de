"""A production install: the wheel carries everything Portico needs, installs into a fresh
virtualenv outside the checkout, and serves real customers there (gunicorn, an RQ worker,
PostgreSQL and Redis), following the commands of ``docs/deploying.md``.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import psycopg2
import pytest
from conftest import POSTGRES_ADMIN_URL, _postgres_database, csrf_token, free_port, need_service
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The wheel built from this checkout, and what the build printed."""
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(folder), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (built,) = folder.glob("portico-*.whl")
    return built, build.stdout + build.stderr


def test_the_wheel_carries_templates_migrations_static_files_and_translations(wheel):
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    for needed in ("core/templates/portal/home.html", "core/templates/invoice/invoice.css",
                   "core/templates/email/customer_sign_in_link.txt", "core/migrations/0001_initial.py",
                   "core/static/portico.css", "core/translations/fr/LC_MESSAGES/messages.mo",
                   "plugins/sandbox/templates/sandbox/card_form.html",
                   "plugins/sandbox/migrations/0001_ledger.py", "core/wsgi.py"):
        assert needed in names


def test_the_wheel_installs_only_the_core_and_plugins_packages(wheel):
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel[0]).namelist()}
    assert top_level - {"core", "plugins"} == {"portico-0.1.0.dist-info"}


def test_the_wheel_builds_without_packaging_warnings(wheel):
    assert "warning" not in wheel[1].lower(), wheel[1]


# --- The production smoke test ---------------------------------------------------------------

GUIDE = ROOT / "docs" / "deploying.md"
PUBLIC = "https://portal.example.test"  # the address customers see, served through the "proxy" below
METRICS_TOKEN = "smoke-metrics-token-0123456789abcdef"


def guide_steps() -> dict[str, str]:
    """The guide's shell blocks, by the step name in the comment above each."""
    return dict(re.findall(r"<!-- smoke: (\w+) -->\n```sh\n(.*?)```", GUIDE.read_text(), re.S))


def test_every_shell_block_of_the_deployment_guide_is_a_smoke_test_step():
    assert GUIDE.read_text().count("```sh") == len(guide_steps())
    assert set(guide_steps()) == {"install", "migrate", "web", "worker", "backup", "restore"}


def test_the_alert_rules_of_the_guide_name_metrics_portico_serves():
    """Checked against a real scrape by the smoke test; here: each rule names a known family."""
    names = set(re.findall(r"\bportico_[a-z_]+", GUIDE.read_text().split("Three alert rules")[1]))
    assert names == {"portico_charges_total", "portico_webhook_deliveries_total", "portico_queue_depth",
                     "portico_queue_failed_jobs"}


class Proxy:
    """What nginx does in front of gunicorn: forwards to it with ``X-Forwarded-Proto: https``
    and the client's address, and (as the browser would over https) keeps the cookies."""

    def __init__(self, port):
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7",
                                          "Host": "portal.example.test"})
        self.cookies = {}

    def request(self, method, path, headers=None, **kwargs):
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = self.http.request(method, path.removeprefix(PUBLIC),
                                     headers={"Cookie": cookie, **(headers or {})}, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            name, value = header.split(";")[0].split("=", 1)
            self.cookies[name] = value
        return response

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)


@pytest.fixture
def production_pass():
    if os.environ.get("PORTICO_TEST_DATABASE") != "postgresql":
        pytest.skip("the production smoke test runs in the PostgreSQL pass of the suite")


@pytest.fixture
def postgres_database(production_pass):
    url, drop, error = _postgres_database()
    if url is None:
        need_service(f"PostgreSQL is not reachable: {error}")
    restore = f"{url.rsplit('/', 1)[1]}_restored"
    yield url, restore
    drop()
    admin = psycopg2.connect(POSTGRES_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{restore}"')
    admin.close()


def wait_for(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def test_a_wheel_in_a_fresh_virtualenv_serves_customers_in_production(wheel, postgres_database, redis_url,
                                                                      inbox, tmp_path):
    database_url, restore = postgres_database
    shutil.copy(wheel[0], tmp_path)
    (tmp_path / "metrics").mkdir()
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PORTICO_", "PROMETHEUS_")) and name not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PORTICO_ENV="production", PORTICO_SECRET_KEY=secrets.token_urlsafe(48),
               PORTICO_BASE_URL=PUBLIC, PORTICO_DATABASE_URL=database_url, PORTICO_REDIS_URL=redis_url,
               PORTICO_QUEUE_NAME=f"smoke-{uuid.uuid4().hex[:8]}", PORTICO_PROXY_HOPS="1",
               PORTICO_SMTP_HOST="127.0.0.1", PORTICO_SMTP_PORT=str(inbox.port),
               PORTICO_SMTP_STARTTLS="false",
               PORTICO_METRICS_TOKEN=METRICS_TOKEN, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
               RESTORE_DATABASE=restore)
    steps = guide_steps()

    def run(script):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout, done.stderr

    def start(script):
        return subprocess.Popen(["bash", "-c", f"exec {script.strip()}"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    status, _, errors = run(steps["install"])
    assert status == 0, errors
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert not (site / "templates").exists() and not (site / "migrations").exists()

    status, out, errors = run(steps["migrate"])
    assert status == 1, out + errors  # no live-mode payment provider: the sandbox serves test mode only
    assert "applied core:0001_initial" in out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in failed] == ["FAIL live payment provider"], out

    status, out, errors = run("venv/bin/portico demo --json")
    assert status == 0, errors
    business = json.loads(out)["business"]["id"]

    web = start(steps["web"].replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    worker = start(steps["worker"])
    try:
        proxy = Proxy(port)
        wait_for(lambda: _answers(proxy, "/readyz"), 60, "/readyz answering 200")

        form = proxy.get(f"/test/login/{business}")
        sent = proxy.post(f"/test/login/{business}", data={"csrf_token": csrf_token(form.text),
                                                           "email": "ann@example.com"})
        assert sent.status_code == 303  # to the "link sent" page
        message = wait_for(lambda: [m for m in inbox.messages() if "ann@example.com" in m["To"]], 60,
                           "the sign-in e-mail (sent by the worker)")[0]
        link = re.search(rf"{PUBLIC}/session/[A-Za-z0-9_-]+", message.get_body(("plain",)).get_content())[0]
        page = proxy.get(link)
        signed_in = proxy.post(link, data={"csrf_token": csrf_token(page.text)})
        assert signed_in.status_code in (302, 303) and "/portal" in signed_in.headers["Location"]

        billing = proxy.get("/portal/billing")
        assert billing.status_code == 200
        invoice = re.search(r'href="(/portal/invoices/inv_[A-Za-z0-9]+\.pdf)"', billing.text)[1]
        pdf = proxy.get(invoice)
        assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF")

        for _ in range(10):
            assert proxy.get("/healthz").status_code == 200
        scraped = proxy.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(scraped.text) for s in family.samples}
        health = ("portico_http_requests_total",
                  (("endpoint", "web.health"), ("method", "GET"), ("status", "200")))
        assert samples[health] == 10  # counted across both gunicorn workers
        assert {"portico_charges_total", "portico_sign_in_links_total", "portico_queue_depth",
                "portico_queue_failed_jobs"} <= {name for name, _ in samples}
    finally:
        for process in (web, worker):
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=60) for process in (web, worker)]
    assert web.returncode == 0 and worker.returncode == 0, outputs
    web_log = outputs[0][1]
    assert "/session/[redacted]" in web_log and link.rsplit("/", 1)[1] not in web_log

    status, _, errors = run(steps["backup"])
    assert status == 0, errors
    status, out, errors = run(steps["restore"])
    assert status == 0, errors
    assert out.strip().endswith("database is up to date")


def _answers(proxy, path):
    try:
        return proxy.get(path).status_code == 200
    except httpx.TransportError:
        return False
