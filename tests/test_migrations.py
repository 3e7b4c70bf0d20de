"""Migrations build, from an empty database, exactly the schema the models describe."""

import peewee as pw
import pytest
from playhouse.schema_diff import diff_models

from core import ConfigError, hookimpl
from core.models import BaseModel, db, init_db, migrate


def bound_models():
    """Every model of the core and the installed plugins (bound to the database proxy)."""
    found, todo = [], [pw.Model]
    while todo:
        for model in todo.pop().__subclasses__():
            todo.append(model)
            if model._meta.database is db and model is not BaseModel:
                found.append(model)
    return found


def schema():
    """Tables, columns, indexes and foreign keys, as the database reports them."""
    described = {}
    for table in sorted(db.get_tables()):
        if table.startswith("schema_migration"):
            continue
        described[table] = {
            "columns": sorted((c.name, c.data_type.lower(), c.null, c.primary_key)
                              for c in db.get_columns(table)),
            "indexes": sorted((tuple(i.columns), i.unique) for i in db.get_indexes(table)
                              if not i.name.endswith("_pkey") and not i.name.startswith("sqlite_")),
            "foreign_keys": sorted((f.column, f.dest_table, f.dest_column)
                                   for f in db.get_foreign_keys(table)),
        }
    return described


def test_migrations_build_the_schema_the_models_describe(app, fresh_database_url):
    models = bound_models()
    init_db(fresh_database_url("from_models"))
    db.create_tables(models)
    expected = schema()
    db.close()

    init_db(fresh_database_url("from_migrations"))
    migrate(app)
    assert not diff_models(db, models)
    assert schema() == expected
    db.close()


def test_migrate_applies_nothing_the_second_time(app, fresh_database_url):
    init_db(fresh_database_url())
    assert "core:0001_initial" in migrate(app)
    assert migrate(app) == []
    db.close()


def test_names_saved_on_several_lines_are_put_on_one(app, fresh_database_url):
    from core.models import Business, Customer

    init_db(fresh_database_url())
    migrate(app)
    business = Business.create(name="Acme\r\nSoftware")
    Customer.create(business=business, mode="test", email="ann@example.com", name="Ann\nExample\t")
    Customer.create(business=business, mode="test", email="bob@example.com", name="Bob  Smith")
    db.execute_sql("DELETE FROM schema_migration WHERE name = '0013_one_line_names'")
    assert migrate(app) == ["core:0013_one_line_names"]
    assert Business.get().name == "Acme Software"
    assert sorted(c.name for c in Customer.select()) == ["Ann Example", "Bob  Smith"]
    db.close()


class NoMigrationsPlugin:
    """A plugin whose migrations folder is empty, as in a package built without its files."""

    name = "hollow"

    def __init__(self, folder):
        self.folder = folder

    @hookimpl
    def register_migrations(self, app):
        return str(self.folder)


def test_migrate_fails_loudly_when_a_source_has_no_migrations(make_app, tmp_path):
    app = make_app(plugins=[NoMigrationsPlugin(tmp_path)])
    with app.app_context(), pytest.raises(ConfigError, match="no migrations found in .* \\(hollow\\)"):
        migrate(app)


def test_existing_subscriptions_take_the_prices_their_renewals_were_charging(app, fresh_database_url):
    from playhouse.migrations import Runner

    from core.config import shipped
    from core.models import Addon, Business, Customer, Product, Subscription

    init_db(fresh_database_url())
    migrate(app)
    business = Business.create(name="Acme")
    customer = Customer.create(business=business, mode="test", email="ann@example.com", name="Ann")
    product = Product.create(business=business, mode="test", name="Pro", price=1500, currency="EUR",
                             is_recurring=True, tax_rate_bps=2000)
    seat = Addon.create(business=business, mode="test", name="Seat", price=500, currency="EUR")
    sub = Subscription.create(business=business, mode="test", customer=customer, product=product,
                              currency="EUR", recurring_pre_tax_amount=2500,
                              addons=[{"addon_id": seat.id, "quantity": 2}])
    runner = Runner(db.obj, directory=str(shipped("migrations")), table_name="schema_migration")
    assert "0017a_subscription_prices" in runner.down("0017a_subscription_prices")
    assert "core:0017a_subscription_prices" in migrate(app)
    sub = sub.refresh()
    assert (sub.unit_amount, sub.tax_rate_bps, sub.credit_balance) == (1500, 2000, 0)
    assert sub.addons == [{"addon_id": seat.id, "name": "Seat", "quantity": 2, "unit_amount": 500}]
    db.close()


def test_a_business_that_let_customers_pause_keeps_it_as_a_portal_setting_in_both_modes(
        app, fresh_database_url):
    from core import portal_settings
    from core.models import Business

    init_db(fresh_database_url())
    migrate(app)
    pausing = Business.create(name="Pausing", settings={"customers_may_pause": True,
                                                        "renewal_reminders": "all"})
    configured = Business.create(name="Configured", settings={"customers_may_pause": True})
    portal_settings.save(configured.id, "live", {"billing_history": False})
    never = Business.create(name="Never", settings={"customers_may_pause": False})
    db.execute_sql("DELETE FROM schema_migration WHERE name = '0018p_pause_in_portal_settings'")
    assert migrate(app) == ["core:0018p_pause_in_portal_settings"]
    for business in (pausing, configured):
        for mode in ("test", "live"):
            assert portal_settings.load(business.id, mode)[0]["pause"] == {"enabled": True}
    assert portal_settings.load(configured.id, "live")[0]["billing_history"] is False
    assert portal_settings.load(never.id, "test")[0]["pause"] == {"enabled": False}
    assert Business.get_by_id(pausing.id).settings == {"renewal_reminders": "all"}
    assert Business.get_by_id(never.id).settings == {}
    db.close()
