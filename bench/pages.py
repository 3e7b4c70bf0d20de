"""Benchmark: portal pages per second under gunicorn, against a bare Flask route; invoice PDFs.

Seeds a customer with N payments (each invoiced), signs in, and serves the app with gunicorn
(2 sync workers). Load: the overview and the billing history, requested by C client threads
for S seconds each; in the same run, a bare Flask app (also gunicorn, 2 workers) renders a
template of the same size (the overview's own HTML), so the ratio shows Portico's overhead
(session check, queries, i18n). Then invoice PDFs: the first download (rendered in the web
worker, once cold and once warm) and cached downloads, against a raw WeasyPrint render of
the same invoice HTML in this process.

    python bench/pages.py                        # SQLite, 1,000 payments
    python bench/pages.py --database postgresql  # a fresh PostgreSQL database

PostgreSQL comes from PORTICO_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
Client threads run on the same machine as the server: compare ratios, not absolute figures.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.renewals import database  # noqa: E402 - a fresh SQLite or PostgreSQL database, and its drop

POSTGRES = os.environ.get("PORTICO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def bare_app():
    """The baseline: Flask rendering one template (``BENCH_TEMPLATES``/page.html), no database."""
    from flask import Flask, render_template

    app = Flask("bare", template_folder=os.environ["BENCH_TEMPLATES"])

    @app.get("/")
    def page():
        return render_template("page.html", title="Baseline")

    return app


def seed(app, payments: int) -> dict:
    """A business, a customer with a subscription, ``payments`` invoiced payments and a
    license key; returns a sign-in link path and an invoice without a cached PDF."""
    from core import auth
    from core.models import (
        Business,
        Customer,
        Invoice,
        LicenseKey,
        Payment,
        PaymentMethod,
        Product,
        Subscription,
        db,
        new_id,
    )

    with app.app_context(), db.atomic():
        business = Business.create(name="Acme Software", legal_name="Acme Software SAS",
                                   address="12 rue de la Paix\n75002 Paris", brand_color="#0f766e")
        customer = Customer.create(business=business, mode="test", email="ann@example.com",
                                   name="Ann Martin", preferred_locale="en")
        product = Product.create(business=business, mode="test", name="Acme Pro", price=1500,
                                 currency="EUR", is_recurring=True, tax_rate_bps=2000)
        card = PaymentMethod.create(business=business, mode="test", customer=customer,
                                    provider="sandbox", provider_token="pm_card_visa", brand="visa",
                                    last4="4242", exp_month=12, exp_year=2040)
        sub = Subscription.create(business=business, mode="test", customer=customer, product=product,
                                  status="active", currency="EUR", recurring_pre_tax_amount=1500,
                                  payment_method=card)
        LicenseKey.create(business=business, mode="test", customer=customer, product=product,
                          key="7K3QF-XM2PA-9RTVW-4HJKN-BC8DE", activations_limit=3)
        rows = [{"id": new_id("pay"), "business": business.id, "mode": "test", "customer": customer.id,
                 "subscription": sub.id, "product": product.id, "payment_method": card.id,
                 "kind": "renewal", "status": "succeeded", "amount": 1800, "tax": 300,
                 "currency": "EUR", "description": "Acme Pro", "idempotency_key": new_id("ik"),
                 "metadata": {}} for _ in range(payments)]
        line = [{"amount": 1500, "description": "Acme Pro", "quantity": 1, "unit_amount": 1500}]
        seller = {"name": "Acme Software", "legal_name": "Acme Software SAS", "address": "Paris"}
        buyer = {"name": "Ann Martin", "email": "ann@example.com"}
        for start in range(0, payments, 200):
            chunk = rows[start:start + 200]
            Payment.insert_many(chunk).execute()
            Invoice.insert_many([{
                "id": new_id("inv"), "business": business.id, "mode": "test", "customer": customer.id,
                "payment": row["id"], "number": start + n + 1, "currency": "EUR", "lines": line,
                "subtotal": 1500, "tax": 300, "total": 1800, "seller": seller, "buyer": buyer,
                "payment_details": {"method": "Visa •••• 4242", "status": "paid"}}
                for n, row in enumerate(chunk)]).execute()
        invoices = [i.id for i in Invoice.select(Invoice.id).order_by(Invoice.number).limit(2)]
        link = auth.sign_in_link(customer)
    return {"link": link.split("://", 1)[1].split("/", 1)[1], "invoices": invoices}


def server_env(url: str, folder: str) -> dict:
    """The environment Portico's web server runs with (also set in this process)."""
    env = {**os.environ, "PORTICO_ENV": "development", "PORTICO_DATABASE_URL": url,
           "PORTICO_SECRET_KEY": "bench-" + uuid.uuid4().hex * 2, "PORTICO_INSTANCE_PATH": folder,
           "PORTICO_MAIL_OUTBOX": f"{folder}/outbox.mbox", "PORTICO_REDIS_URL": "",
           "PORTICO_SESSION_IDLE_TTL": "3600", "PYTHONPATH": str(ROOT)}
    os.environ.update({k: v for k, v in env.items() if k.startswith("PORTICO_")})
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn(target: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                               "--log-level", "warning", target], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/healthz" if "wsgi" in target else url, timeout=1)
            return server, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"gunicorn {target} did not start")


def load(url: str, cookies=None, seconds=5.0, threads=8) -> dict:
    """``{"rate": requests per second, "p50": ms, "p99": ms}`` for ``url`` requested by
    ``threads`` clients over ``seconds``, each client sending the same ``cookies`` and
    headers whatever the server (the bare route gets Portico's session cookie too). Each
    client sends at least one request, so a machine too busy to start a client before the
    window ends still gives a rate (never zero requests, never a division by zero)."""
    latencies, stop = [], time.monotonic() + seconds

    def client():
        mine = []
        with httpx.Client(cookies=cookies, timeout=30) as session:
            while not mine or time.monotonic() < stop:
                started = time.perf_counter()
                answer = session.get(url)
                mine.append(time.perf_counter() - started)
                assert answer.status_code == 200, (url, answer.status_code)
        latencies.extend(mine)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"elapsed": time.monotonic() - started, "latencies": latencies}


def interleaved(urls: list[tuple[str, str]], cookies, seconds: float, threads: int, rounds: int) -> dict:
    """Each of ``urls`` (``(name, url)``) loaded ``rounds`` times in turn, ``seconds`` in all
    per page, so a change in the machine's load touches every page alike; per name
    ``{"rate", "p50", "p99"}``."""
    runs = {name: [] for name, _ in urls}
    for _ in range(rounds):
        for name, url in urls:
            runs[name].append(load(url, cookies, seconds / rounds, threads))
    results = {}
    for name, parts in runs.items():
        latencies = [t for part in parts for t in part["latencies"]]
        rate = len(latencies) / sum(part["elapsed"] for part in parts)
        results[name] = {"rate": rate, **percentiles(latencies)}
    return results


def percentiles(seconds: list[float]) -> dict:
    """The median and 99th percentile of ``seconds``, in milliseconds."""
    if len(seconds) < 2:
        only = 1000 * seconds[0] if seconds else float("nan")
        return {"p50": only, "p99": only}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": 1000 * statistics.median(seconds), "p99": 1000 * cuts[98]}


def pages(base: str, bare_url: str, payments: int) -> list[tuple[str, str]]:
    """The pages measured, as ``(name, url)``: the bare route first, then Portico's."""
    last = max(-(-payments // 20), 1)
    return [("bare", bare_url), ("overview", base + "/portal/"),
            ("billing history", base + "/portal/billing"),
            (f"billing history, page {last}", f"{base}/portal/billing?page={last}")]


def sign_in(url: str, path: str) -> httpx.Cookies:
    with httpx.Client(base_url=url, follow_redirects=False) as browser:
        page = browser.get("/" + path)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)[1]
        assert browser.post("/" + path, data={"csrf_token": token}).status_code == 303
        return browser.cookies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--payments", type=int, default=1000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per page")
    args = parser.parse_args()

    from core import create_app
    from core.models import migrate

    with tempfile.TemporaryDirectory() as folder:
        url, drop = database(args.database, folder)
        env = server_env(url, folder)
        app = create_app()
        migrate(app)
        seeded = seed(app, args.payments)
        portal, base = gunicorn("wsgi:app", env)
        servers = [portal]
        try:
            cookies = sign_in(base, seeded["link"])
            overview_html = httpx.get(base + "/portal/", cookies=cookies).text
            templates = Path(folder) / "templates"
            templates.mkdir()
            (templates / "page.html").write_text("{% raw %}" + overview_html + "{% endraw %}")
            bare, bare_url = gunicorn("bench.pages:bare_app()", {**env, "BENCH_TEMPLATES": str(templates)})
            servers.append(bare)
            results = interleaved(pages(base, bare_url, args.payments), cookies, args.seconds,
                                  args.threads, args.rounds)
            print(f"{args.payments} payments, {args.database}, gunicorn -w 2, {args.threads} client threads, "
                  f"{args.seconds:g} s each in {args.rounds} interleaved rounds; "
                  f"overview HTML {len(overview_html):,} bytes; load average {os.getloadavg()[0]:.2f}")
            for name, result in results.items():
                print(f"  {name:28} {result['rate']:8.0f} req/s   "
                      f"{result['rate'] / results['bare']['rate']:.2f}× bare   "
                      f"p50 {result['p50']:6.1f} ms   p99 {result['p99']:6.1f} ms")

            pdf_times = []
            for invoice in seeded["invoices"]:  # the first: a cold worker; the second: warmer
                started = time.perf_counter()
                answer = httpx.get(f"{base}/portal/invoices/{invoice}.pdf", cookies=cookies, timeout=60)
                pdf_times.append(time.perf_counter() - started)
                assert answer.headers["content-type"] == "application/pdf"
            cached = interleaved([("pdf", f"{base}/portal/invoices/{seeded['invoices'][0]}.pdf")],
                                 cookies, args.seconds, args.threads, 1)["pdf"]["rate"]
            raw = raw_weasyprint(app, seeded["invoices"][0])
            print(f"  invoice PDF, first download  {pdf_times[0] * 1000:8.0f} ms (cold worker), "
                  f"{pdf_times[1] * 1000:.0f} ms (another invoice)")
            print(f"  invoice PDF, cached          {cached:8.0f} req/s "
                  f"({1000 * args.threads / cached:.1f} ms each under load)")
            print(f"  raw WeasyPrint render        {raw[0] * 1000:8.0f} ms first, "
                  f"{raw[1] * 1000:.0f} ms warm (median of 5)")
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
            from core.models import db

            if not db.is_closed():
                db.close()
            drop()


def raw_weasyprint(app, invoice_id) -> tuple[float, float]:
    """Seconds for WeasyPrint alone to render the invoice's HTML: first, then warm (median)."""
    from core.billing import render_invoice_html
    from core.models import Invoice
    from plugins.pdf import html_to_pdf

    with app.test_request_context():
        html = render_invoice_html(Invoice.get_by_id(invoice_id))
    times = []
    for _ in range(6):
        started = time.perf_counter()
        html_to_pdf(html)
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


if __name__ == "__main__":
    main()
