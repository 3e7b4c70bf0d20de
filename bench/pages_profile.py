"""Benchmark: where a portal page's time goes, by part of the stack (cProfile, in process).

Seeds the pages benchmark's customer (N invoiced payments), signs in with Flask's test client
and requests each page R times unprofiled (milliseconds per request), then R times under
cProfile, and prints each part's own time (``tottime``) per request: peewee, Werkzeug and
Flask, Jinja and the templates, Babel, Portico's code, the database driver, the other
libraries. The profiler inflates code that makes many small calls: read the proportions.
Log records are dropped, as a quiet production log level would.

    python bench/pages_profile.py                        # SQLite, 1,000 payments, 200 requests
    python bench/pages_profile.py --database postgresql
"""

import argparse
import cProfile
import logging
import os
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pages import seed, server_env  # noqa: E402
from bench.renewals import database  # noqa: E402

PARTS = (  # (part, what its files' paths contain), the first match wins
    ("peewee", ("/peewee.py", "/playhouse/")),
    ("Werkzeug and Flask", ("/werkzeug/", "/flask/")),
    ("Jinja, MarkupSafe and the templates", ("/jinja2/", "/markupsafe/", "/templates/", "<template")),
    ("Babel and Flask-Babel", ("/babel/", "/flask_babel/")),
    ("Portico's own code", (f"{ROOT}/core/", f"{ROOT}/plugins/")),
    ("flask-limiter, flask-login, Flask-WTF, itsdangerous",
     ("/flask_limiter/", "/limits/", "/flask_login/", "/flask_wtf/", "/wtforms/", "/itsdangerous/")),
)


def part(filename: str, function: str) -> str:
    """The part of the stack a profiled function belongs to."""
    if filename == "~" and ("sqlite3" in function or "psycopg2" in function):
        return "the database driver (and the database's answer)"
    for name, marks in PARTS:
        if any(mark in filename for mark in marks):
            return name
    return "Python built-ins" if filename == "~" else "the standard library"


def profile(client, path: str, requests: int) -> tuple[float, dict]:
    """Milliseconds per request unprofiled, and per part under cProfile, for ``path``."""
    for _ in range(requests // 4):  # warm: templates compiled, caches filled
        assert client.get(path).status_code == 200, path
    started = time.perf_counter()
    for _ in range(requests):
        client.get(path)
    plain = 1000 * (time.perf_counter() - started) / requests
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(path)
    profiler.disable()
    parts = {}
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in pstats.Stats(profiler).stats.items():
        name = part(filename, function)
        parts[name] = parts.get(name, 0) + 1000 * own / requests
    return plain, parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--payments", type=int, default=1000)
    parser.add_argument("-r", "--requests", type=int, default=200)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()

    from core import create_app
    from core.models import db, migrate

    with tempfile.TemporaryDirectory() as folder:
        url, drop = database(args.database, folder)
        server_env(url, folder)
        app = create_app()
        migrate(app)
        seeded = seed(app, args.payments)
        logging.disable(logging.CRITICAL)
        try:
            client = app.test_client()
            link = "/" + seeded["link"]
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get(link).text)[1]
            assert client.post(link, data={"csrf_token": token}).status_code == 303
            last = max(-(-args.payments // 20), 1)
            print(f"{args.payments} payments, {args.database}, {args.requests} requests per page; "
                  f"load average {os.getloadavg()[0]:.2f}")
            for name, path in (("overview", "/portal/"), ("billing history", "/portal/billing"),
                               (f"billing history, page {last}", f"/portal/billing?page={last}")):
                plain, parts = profile(client, path, args.requests)
                print(f"  {name}: {plain:.2f} ms per request; under cProfile "
                      f"{sum(parts.values()):.2f} ms:")
                for label, ms in sorted(parts.items(), key=lambda item: -item[1]):
                    print(f"    {label:55} {ms:6.2f} ms")
        finally:
            logging.disable(logging.NOTSET)
            if not db.is_closed():
                db.close()
            drop()


if __name__ == "__main__":
    main()
