"""The ``portico`` command: records made from the shell, and the demo."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from core.auth import digest, find_api_key
from core.cli import main
from core.models import (
    ApiKey,
    Business,
    Customer,
    Invoice,
    LicenseKey,
    MerchantUser,
    Payment,
    PaymentMethod,
    Subscription,
)

DEMO_TABLES = [Business, Customer, MerchantUser, Subscription, Payment, PaymentMethod, Invoice,
               LicenseKey, ApiKey]


def portico(*args, input=None):
    result = CliRunner().invoke(main, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


def counts():
    return {model.__name__: model.select().count() for model in DEMO_TABLES}


def test_demo_json_prints_valid_json_twice_without_duplicating_data(cli_env, app):
    first = json.loads(portico("demo", "--json"))
    after_first = counts()
    second = json.loads(portico("demo", "--json"))
    assert counts() == after_first
    assert first["business"] == second["business"]
    assert first["static_links"]["live"] == f"http://portal.test/login/{first['business']['id']}"
    assert first["static_links"]["test"] == f"http://portal.test/test/login/{first['business']['id']}"
    assert {link["link"] for link in first["magic_links"]}.isdisjoint(
        link["link"] for link in second["magic_links"])
    assert find_api_key(first["api_key"]) is None  # the previous demo key is gone
    assert find_api_key(second["api_key"]).mode == "test"


def test_demo_seeds_every_subscription_state_with_paid_invoices_and_license_keys(cli_env, app):
    result = json.loads(portico("demo", "--json"))
    business = Business.get_by_id(result["business"]["id"])
    statuses = {s.status for s in Subscription.select().where(Subscription.mode == "test")}
    assert {"active", "on_hold", "cancelled"} <= statuses
    assert Customer.select().where(Customer.business == business, Customer.mode == "live").count()
    succeeded = Payment.select().where(Payment.status == "succeeded")
    assert Invoice.select().count() == succeeded.count() > 0
    numbers = sorted(i.number for i in Invoice.select().where(Invoice.mode == "test"))
    assert numbers == list(range(1, len(numbers) + 1))
    assert Payment.select().where(Payment.status == "failed").count() == 1
    assert LicenseKey.select().where(LicenseKey.status == "active").count() == 2
    assert len(result["magic_links"]) == Customer.select().count()
    assert result["merchant"]["email"] and result["merchant"]["password"]


def test_demo_prints_the_links_to_try(cli_env, app):
    output = portico("demo")
    assert "Static link (live): http://portal.test/login/bus_" in output
    assert "http://portal.test/session/" in output
    assert "Test-mode API key: pk_test_" in output


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash(cli_env, app):
    business_id = portico("create-business", "--name", "Globex").strip()
    raw = portico("create-api-key", "--business", business_id, "--mode", "live").strip()
    key = ApiKey.get()
    assert raw.startswith("pk_live_") and key.business_id == business_id
    assert key.key_hash == digest(raw)
    assert raw not in json.dumps([list(row) for row in ApiKey.select().tuples()], default=str)


def test_create_merchant_user_stores_a_password_hash(cli_env, app):
    business_id = portico("create-business", "--name", "Globex").strip()
    portico("create-merchant-user", "--business", business_id, "--email", "Boss@Globex.test",
            input="correct horse battery\ncorrect horse battery\n")
    user = MerchantUser.get()
    assert user.email == "boss@globex.test"
    assert "correct horse" not in user.password_hash


def test_commands_refuse_an_unknown_business_with_one_line(cli_env, app):
    result = CliRunner().invoke(main, ["create-api-key", "--business", "bus_missing"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no business with id 'bus_missing'"


def test_migrate_reports_an_up_to_date_database(cli_env, app):
    assert portico("migrate").strip() == "database is up to date"


def test_migrate_on_a_fresh_checkout_makes_the_instance_folder_it_keeps_the_database_in(tmp_path):
    env = {**os.environ, "PORTICO_ENV": "development", "PORTICO_INSTANCE_PATH": str(tmp_path / "instance")}
    env = {name: value for name, value in env.items()
           if name not in ("PORTICO_DATABASE_URL", "PORTICO_REDIS_URL")}
    done = subprocess.run([sys.executable, "-m", "core.cli", "migrate"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "instance" / "portico.db").exists()
