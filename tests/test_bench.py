"""The benchmarks in ``bench/`` run, at a smoke size, on this run's kind of database, so they
cannot rot between the runs that measure. Their figures are printed, never asserted: speed is
judged from full-size runs (``bench/README.md``), not from timed tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATABASE = os.environ.get("PORTICO_TEST_DATABASE", "sqlite")


def bench(script: str, *args: str) -> str:
    """Run ``bench/<script>`` on this run's kind of database; its printed report."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("PORTICO_") or name.startswith("PORTICO_TEST_")}
    result = subprocess.run([sys.executable, f"bench/{script}", "--database", DATABASE, *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def services(database_url):
    """The database server the benchmarks make their own databases on (skips or fails like
    every test when it is missing)."""
    return database_url


def test_the_pages_benchmark_compares_each_page_with_the_bare_route(services):
    report = bench("pages.py", "-n", "25", "--seconds", "0.3", "--threads", "2", "--rounds", "1")
    for page in ("bare", "overview", "billing history", "billing history, page 2"):
        assert f"  {page} " in report
    assert "× bare" in report and "p50" in report and "p99" in report
    assert "invoice PDF, cached" in report


def test_the_profile_benchmark_splits_each_pages_time_by_part_of_the_stack(services):
    report = bench("pages_profile.py", "-n", "25", "--requests", "4")
    for page in ("overview", "billing history", "billing history, page 2"):
        assert f"  {page}: " in report
    assert "ms per request" in report and "peewee" in report and "Werkzeug and Flask" in report


def test_the_scale_benchmark_measures_a_customer_alone_and_in_a_crowd(services):
    report = bench("scale.py", "--own", "45", "--customers", "30", "--payments", "300",
                   "--seconds", "0.3", "--rounds", "1")
    assert "billing history, page 1" in report and "billing history, page 3" in report
    assert "p99" in report


def test_the_renewals_benchmark_charges_each_renewal_once(services, redis_url):
    report = bench("renewals.py", "-n", "12", "-k", "1")
    assert "each charged once, invoiced once" in report and "no-op jobs" in report
