"""Start-up and configuration: what Portico accepts, and how it refuses what cannot work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import ConfigError, create_app

ROOT = Path(__file__).resolve().parent.parent


def run_portico(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                          **kwargs)


def assert_one_line_error(result, words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]


def test_production_refuses_to_start_without_a_secret_key(make_app):
    with pytest.raises(ConfigError, match="PORTICO_SECRET_KEY is not set"):
        make_app({"ENV": "production", "SECRET_KEY": None})


def test_production_refuses_a_weak_secret_key(make_app):
    with pytest.raises(ConfigError, match="too weak"):
        make_app({"ENV": "production", "SECRET_KEY": "secret"})


def test_production_starts_with_a_real_secret_key(make_app):
    app = make_app({"ENV": "production", "SECRET_KEY": "x" * 48})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_NAME"].startswith("__Host-")


def test_development_starts_without_a_secret_key(make_app):
    app = make_app({"ENV": "development", "SECRET_KEY": None})
    assert app.config["SECRET_KEY"]


def test_environment_overrides_the_instance_config_file(database_url, tmp_path, monkeypatch):
    (tmp_path / "portico.cfg").write_text('BASE_URL = "https://from-file.example"\n'
                                          'QUEUE_NAME = "from-file"\n')
    monkeypatch.setenv("PORTICO_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("PORTICO_QUEUE_NAME", "from-env")
    monkeypatch.setenv("PORTICO_SESSION_TTL", "600")
    monkeypatch.setenv("PORTICO_DISABLED_PLUGINS", "mail, pdf")
    app = create_app(config={"ENV": "testing", "DATABASE_URL": database_url})
    assert app.config["BASE_URL"] == "https://from-file.example"
    assert app.config["QUEUE_NAME"] == "from-env"
    assert app.config["SESSION_TTL"] == 600
    assert app.config["DISABLED_PLUGINS"] == ["mail", "pdf"]


def test_unknown_database_scheme_stops_with_one_line(cli_env):
    result = run_portico(["migrate"], {**cli_env, "PORTICO_DATABASE_URL": "mysql://db/portico"})
    assert_one_line_error(result, "unsupported database URL scheme 'mysql'")


def test_unreachable_redis_stops_with_one_line(cli_env):
    result = run_portico(["plugins"], {**cli_env, "PORTICO_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert_one_line_error(result, "cannot reach Redis at redis://127.0.0.1:1/0")


def test_missing_secret_in_production_stops_with_one_line(cli_env):
    env = {**cli_env, "PORTICO_ENV": "production", "PORTICO_SECRET_KEY": ""}
    assert_one_line_error(run_portico(["migrate"], env), "PORTICO_SECRET_KEY is not set")


def test_wsgi_entry_point_stops_with_one_line_on_bad_configuration(cli_env):
    env = {**os.environ, **cli_env, "PORTICO_ENV": "production", "PORTICO_SECRET_KEY": ""}
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "portico: PORTICO_SECRET_KEY is not set")


def test_every_page_carries_security_headers(client):
    response = client.get("/")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_error_pages_speak_the_visitors_language(client):
    english = client.get("/nowhere", headers={"Accept-Language": "en"})
    french = client.get("/nowhere", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert english.status_code == french.status_code == 404
    assert "Page not found" in english.text
    assert "Page introuvable" in french.text and "ne vous est pas accessible" in french.text
