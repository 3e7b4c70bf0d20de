"""A production install: the wheel carries everything Portico needs, installs into a fresh
virtualenv outside the checkout, and serves real customers there (gunicorn, an RQ worker,
PostgreSQL and Redis), following the commands of ``docs/deploying.md``.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
