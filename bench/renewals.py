"""Benchmark: renewals per second with K real RQ workers, against the same workers on no-op jobs.

Seeds N subscriptions that are due, queues their renewals with the billing sweep (in batches
of ``--batch`` renewals per job), runs K ``portico worker --burst`` processes until every
renewal is settled, and checks that each was charged once and invoiced once. In the same
run, K workers drain N no-op jobs, so the ratio shows Portico's own per-renewal cost (locks,
payment and invoice rows, events) over RQ's.

    python bench/renewals.py -n 10000 -k 2                      # a fresh PostgreSQL database
    python bench/renewals.py -n 2000 -k 2 --database sqlite     # a temporary SQLite file

Needs Redis (PORTICO_TEST_REDIS_URL, default redis://127.0.0.1:6379) and, for PostgreSQL,
PORTICO_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test). Invoice PDFs
are left for first download (INVOICE_PDF_AHEAD off) and no notifier runs, so the figure is the
renewal itself; PDF rendering is measured in bench/pages.py.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDIS = os.environ.get("PORTICO_TEST_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES = os.environ.get("PORTICO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def database(kind, folder):
    """A fresh database URL, and how to drop it."""
    if kind == "sqlite":
        return f"sqlite:///{folder}/bench.db", lambda: None
    import psycopg2

    name = f"portico_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(POSTGRES)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')

    def drop():
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"{POSTGRES.rsplit('/', 1)[0]}/{name}", drop


def seed(n):
    """N active monthly subscriptions, due a minute ago, each with its own customer and card."""
    from core.models import Business, Customer, PaymentMethod, Product, Subscription, db, new_id, utcnow

    now = utcnow()
    business = Business.create(name="Bench")
    product = Product.create(business=business, mode="test", name="Pro", price=1500,
                             currency="EUR", is_recurring=True, tax_rate_bps=2000,
                             subscription_period_count=10)
    batch = 500
    for start in range(0, n, batch):
        size = min(batch, n - start)
        customers = [{"id": new_id("cus"), "business": business.id, "mode": "test",
                      "email": f"c{start + i}@bench.test", "name": f"C {start + i}",
                      "metadata": {}, "created_at": now} for i in range(size)]
        methods = [{"id": new_id("pm"), "business": business.id, "mode": "test",
                    "customer": c["id"], "provider": "sandbox", "provider_token": "pm_card_visa",
                    "brand": "visa", "last4": "4242", "created_at": now} for c in customers]
        subs = [{"id": new_id("sub"), "business": business.id, "mode": "test",
                 "customer": c["id"], "product": product.id, "status": "active", "currency": "EUR",
                 "recurring_pre_tax_amount": 1500, "unit_amount": product.price,
                 "tax_rate_bps": product.tax_rate_bps, "tax_inclusive": product.tax_inclusive,
                 "payment_method": m["id"], "addons": [],
                 "metadata": {}, "billing_anchor": now - timedelta(days=31), "cycles": 0,
                 "previous_billing_date": now - timedelta(days=31),
                 "next_billing_date": now - timedelta(minutes=1), "created_at": now,
                 "updated_at": now, "expires_at": now + timedelta(days=3650)}
                for c, m in zip(customers, methods, strict=True)]
        with db.atomic():
            Customer.insert_many(customers).execute()
            PaymentMethod.insert_many(methods).execute()
            Subscription.insert_many(subs).execute()


def drain(k, env, log):
    """Run K burst workers until the queue is empty; the seconds it took."""
    started = time.perf_counter()
    with open(log, "ab") as output:
        workers = [subprocess.Popen([sys.executable, "-m", "core.cli", "worker", "--burst"],
                                    cwd=ROOT, env=env, stdout=output, stderr=output)
                   for _ in range(k)]
        failed = [worker for worker in workers if worker.wait() != 0]
    if failed:
        sys.exit(f"a worker failed; see {log}")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, help="due subscriptions")
    parser.add_argument("-k", type=int, default=2, help="worker processes")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--batch", type=int, default=50, help="renewals per job (RENEWAL_BATCH_SIZE)")
    args = parser.parse_args()

    import redis

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import claim_redis_database

    load = os.getloadavg()
    redis_url = claim_redis_database(REDIS)
    if redis_url is None:
        sys.exit("no Redis database (1-15) is free")
    with tempfile.TemporaryDirectory() as folder:
        url, drop = database(args.database, folder)
        env = {**os.environ, "PORTICO_ENV": "testing", "PORTICO_DATABASE_URL": url,
               "PORTICO_REDIS_URL": redis_url, "PORTICO_QUEUE_NAME": "bench",
               "PORTICO_INSTANCE_PATH": folder, "PORTICO_INVOICE_PDF_AHEAD": "0",
               "PORTICO_DISABLED_PLUGINS": "mail,webhooks",
               "PORTICO_RENEWAL_BATCH_SIZE": str(args.batch)}
        os.environ.update(env)
        from core import create_app, jobs
        from core.billing import sweep
        from core.models import Invoice, Payment, migrate
        from plugins.sandbox import charges

        app = create_app()
        try:
            migrate(app)
            with app.app_context():
                started = time.perf_counter()
                seed(args.n)
                seeded = time.perf_counter() - started
                started = time.perf_counter()
                queued = sweep()["renewals"]
                queueing = time.perf_counter() - started
            log = Path(folder) / "workers.log"
            renewing = drain(args.k, env, log)
            worker_log = log.read_text()
            with app.app_context():
                renewed = Payment.select().where((Payment.kind == "renewal")
                                                 & (Payment.status == "succeeded")).count()
                invoices, charged = Invoice.select().count(), len(charges())
                q = jobs.queue()
                for _ in range(args.n):
                    q.enqueue("os.getpid", result_ttl=0)
            noop = drain(args.k, env, log)
        finally:
            redis.Redis.from_url(redis_url).flushdb()
            from core.models import db

            db.close()
            drop()
    counted = (renewed, invoices, charged, queued)
    assert counted == (args.n,) * 4, f"{counted}: {worker_log[-3000:]}"
    print(f"database: {args.database}, N={args.n}, K={args.k} workers, {args.batch} renewals per job, "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"seeded {args.n} due subscriptions in {seeded:.1f} s; sweep queued them in {queueing:.1f} s")
    print(f"renewals: {args.n / renewing:.0f}/s ({renewing:.1f} s; each charged once, invoiced once)")
    print(f"no-op jobs: {args.n / noop:.0f}/s ({noop:.1f} s)")
    print(f"ratio: renewals run at {noop / renewing:.2f}× the no-op job rate")


if __name__ == "__main__":
    main()
