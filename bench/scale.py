"""Benchmark: billing history latency for one customer, alone and among 100k customers / 1M payments.

Seeds a customer with P payments (each invoiced, as ``bench/pages.py`` does), serves Portico
with gunicorn and measures the billing history's first and last page (p50/p99, T client
threads); then adds C other customers sharing M payments and invoices in multi-row
``INSERT … SELECT`` statements (minutes, not hours), runs ``ANALYZE`` and measures the same
pages for the same customer again. A page's cost should not grow with the size of the table.

    python bench/scale.py                                  # PostgreSQL, 100k customers, 1M payments
    python bench/scale.py --customers 100 --payments 2000 --database sqlite   # a quick look

PostgreSQL comes from PORTICO_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pages import gunicorn, interleaved, seed, server_env, sign_in  # noqa: E402
from bench.renewals import database  # noqa: E402

BATCH = 100_000  # rows per INSERT … SELECT

COUNTER = "WITH RECURSIVE n(i) AS (SELECT %(start)s UNION ALL SELECT i + 1 FROM n WHERE i < %(stop)s) "


def crowd(customers: int, payments: int, first_number: int):
    """``customers`` other customers of the seeded business, sharing ``payments`` succeeded
    payments, each with its invoice (numbered after ``first_number``), all a year old."""
    from core.models import Business, Product, db

    business, product = Business.get().id, Product.get().id
    old = (datetime.now(UTC) - timedelta(days=365)).strftime("%Y-%m-%d %H:%M:%S")
    common = {"business": business, "product": product, "old": old, "customers": customers,
              "first": first_number, "no": False,
              "lines": json.dumps([{"amount": 1500, "description": "Acme Pro", "quantity": 1,
                                    "unit_amount": 1500}]),
              "seller": json.dumps({"name": "Acme Software"}), "buyer": json.dumps({"name": "C"}),
              "details": json.dumps({"method": "Visa •••• 4242", "status": "paid"})}
    statements = [
        (customers, "INSERT INTO customer (id, created_at, business_id, mode, email, name, metadata) "
                    "SELECT 'cus_crowd' || i, %(old)s, %(business)s, 'test', 'c' || i || '@crowd.test', "
                    "'C ' || i, '{}' FROM n"),
        (payments, "INSERT INTO payment (id, created_at, updated_at, business_id, mode, customer_id, "
                   "product_id, kind, status, amount, tax, currency, description, idempotency_key, "
                   "attempts, metadata) "
                   "SELECT 'pay_crowd' || i, %(old)s, %(old)s, %(business)s, 'test', "
                   "'cus_crowd' || (i % %(customers)s), %(product)s, 'renewal', 'succeeded', 1800, 300, "
                   "'EUR', 'Acme Pro', 'ik_crowd' || i, 1, '{}' FROM n"),
        (payments, "INSERT INTO invoice (id, created_at, issued_at, business_id, mode, customer_id, "
                   "payment_id, number, currency, lines, tax_inclusive, subtotal, tax, total, "
                   "credit_applied, seller, buyer, payment_details) "
                   "SELECT 'inv_crowd' || i, %(old)s, %(old)s, %(business)s, 'test', "
                   "'cus_crowd' || (i % %(customers)s), 'pay_crowd' || i, %(first)s + i + 1, 'EUR', "
                   "%(lines)s, %(no)s, 1500, 300, 1800, 0, %(seller)s, %(buyer)s, %(details)s "
                   "FROM n"),
    ]
    sqlite = db.param == "?"
    for rows, sql in statements:
        for start in range(0, rows, BATCH):
            values = {**common, "start": start, "stop": min(start + BATCH, rows) - 1}
            query = COUNTER + sql
            if sqlite:  # the same statement with sqlite3's named parameters
                query = query.replace("%(", ":").replace(")s", "").replace("%%", "%")
            else:
                query = query.replace(" % %(customers)s", " %% %(customers)s")
            with db.atomic():
                db.execute_sql(query, values)
    db.execute_sql("ANALYZE")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--own", type=int, default=1000, help="the measured customer's payments")
    parser.add_argument("--customers", type=int, default=100_000, help="other customers")
    parser.add_argument("--payments", type=int, default=1_000_000, help="payments in all")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per page")
    args = parser.parse_args()

    from core import create_app
    from core.models import db, migrate

    with tempfile.TemporaryDirectory() as folder:
        url, drop = database(args.database, folder)
        env = server_env(url, folder)
        app = create_app()
        migrate(app)
        seeded = seed(app, args.own)
        server, base = gunicorn("wsgi:app", env)
        try:
            cookies = sign_in(base, seeded["link"])
            last = max(-(-args.own // 20), 1)
            urls = [("page 1", base + "/portal/billing"),
                    (f"page {last}", f"{base}/portal/billing?page={last}")]
            small = interleaved(urls, cookies, args.seconds, args.threads, args.rounds)
            started = time.perf_counter()
            with app.app_context():
                crowd(args.customers, max(args.payments - args.own, 0), args.own)
            seeding = time.perf_counter() - started
            large = interleaved(urls, cookies, args.seconds, args.threads, args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=30)
            if not db.is_closed():
                db.close()
            db.close_all() if hasattr(db.obj, "close_all") else None
            drop()
    print(f"{args.database}: one customer with {args.own} payments, then among {args.customers:,} "
          f"customers and {args.payments:,} payments (seeded in {seeding:.0f} s); "
          f"{args.threads} client threads, {args.seconds:g} s per page; load average "
          f"{os.getloadavg()[0]:.2f}")
    for name, _ in urls:
        s, big = small[name], large[name]
        print(f"  billing history, {name:9} p50 {s['p50']:6.1f} → {big['p50']:6.1f} ms   "
              f"p99 {s['p99']:6.1f} → {big['p99']:6.1f} ms ({big['p99'] / s['p99']:.2f}×)   "
              f"{s['rate']:5.0f} → {big['rate']:5.0f} req/s")


if __name__ == "__main__":
    main()
