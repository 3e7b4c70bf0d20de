"""The ``portico`` command: migrate, serve, work the queue, list plugins, create records, seed a demo.

Every command builds the application from the environment (``PORTICO_*``) and stops with one
clear line, never a traceback, when the configuration cannot work.
"""

import functools
import json

import click

from core import ConfigError, create_app
from core.monitoring import configure_logging


def with_app(command):
    """Build the app for ``command`` and run it inside an application context."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            app = create_app()
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        configure_logging(app)
        with app.app_context():
            return command(app, *args, **kwargs)

    return wrapper


@click.group(help=__doc__.splitlines()[0])
def main():
    pass


@main.command()
@with_app
def migrate(app):
    """Apply pending database migrations (the core's, then each plugin's)."""
    from core.models import migrate as apply

    try:
        applied = apply(app)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo("\n".join(f"applied {name}" for name in applied) or "database is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, envvar="PORT")
@click.option("--demo", "with_demo", is_flag=True,
              help="Seed the demo and print its links once the server listens.")
@with_app
def serve(app, host, port, with_demo):
    """Serve the portal with the development server (use gunicorn in production)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class RequestHandler(WSGIRequestHandler):
        def log_request(self, *args):
            """Nothing: Portico logs each request itself (``core.monitoring``)."""

    server = make_server(host, port, app, threaded=True, request_handler=RequestHandler)
    click.echo(f"Serving Portico on http://{host}:{server.server_port} with the development "
               f"server (production: gunicorn 'core.wsgi:app'); Ctrl+C stops it.")
    if with_demo:
        _print_demo(app)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@with_app
def worker(app, burst):
    """Run an RQ worker with its scheduler; the app and plugins are loaded once, before forking."""
    from core.billing import book_sweep
    from core.jobs import run_worker

    try:
        run_worker(app, burst=burst, startup=[book_sweep])
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.command()
def check():
    """Check the configuration as production reads it, one line per check; exit 1 on any failure."""
    from core.checks import all_checks, run

    try:
        app = create_app(strict=False)
    except ConfigError as error:
        click.echo(f"FAIL configuration: {error}")
        raise SystemExit(1) from None
    outcomes = run(app, all_checks(app), deadline=max(app.config["SMTP_TIMEOUT"], 5))
    for outcome in outcomes:
        click.echo(str(outcome))
    failed = [outcome.name for outcome in outcomes if not outcome.ok]
    click.echo(f"{len(failed)} of {len(outcomes)} checks failed" if failed else
               f"all {len(outcomes)} checks passed")
    raise SystemExit(1 if failed else 0)


@main.group()
def billing():
    """Billing chores (the worker also runs them on a schedule)."""


@billing.command()
@with_app
def sweep(app):
    """Queue due renewals, lost charges and undelivered events (safe to run any time)."""
    from core.billing import sweep as run

    counts = run()
    click.echo(f"{counts['renewals']} renewal(s), {counts['charges']} charge(s) to recover, "
               f"{counts['events']} event(s) to deliver")


@main.group()
def customers():
    """A customer's data rights: export everything held, or erase their personal data."""


def _record(model_name: str, record_id: str):
    """The ``core.models`` record ``model_name`` with ``record_id``; one line, no traceback,
    when there is none."""
    from core import models

    record = getattr(models, model_name).get_or_none(id=record_id)
    if record is None:
        raise click.ClickException(f"no {model_name.lower()} with id {record_id!r}")
    return record


@customers.command("export")
@click.argument("customer_id")
@with_app
def export_customer(app, customer_id):
    """Print everything held about a customer as one JSON document (GDPR articles 15, 20)."""
    from core.privacy import export

    click.echo(json.dumps(export(_record("Customer", customer_id), by="cli"), indent=2, ensure_ascii=False))


@customers.command("erase")
@click.argument("customer_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_app
def erase_customer(app, customer_id, yes):
    """Erase a customer's personal data (GDPR article 17); invoices and payments stay."""
    from core.privacy import erase

    customer = _record("Customer", customer_id)
    if not yes:
        click.confirm(f"Erase the personal data of {customer.email} ({customer.id}) for good?", abort=True)
    erased = erase(customer, by="cli")
    click.echo(f"erased {erased.id}: sessions ended, personal data removed, invoices kept")


@main.command()
@with_app
def plugins(app):
    """List installed plugins, their versions and the hooks they implement."""
    from core.plugins import registry

    for info in registry(app).info:
        click.echo(f"{info.name:<12} {info.version:<10} {', '.join(info.hooks)}")


@main.command("create-business")
@click.option("--name", required=True)
@click.option("--legal-name", default="")
@click.option("--support-email", default=None)
@with_app
def create_business(app, name, legal_name, support_email):
    """Create a business and print its id."""
    from core.models import Business

    business = Business.create(name=name, legal_name=legal_name or name, support_email=support_email)
    click.echo(business.id)


@main.command("create-merchant-user")
@click.option("--business", "business_id", required=True, help="The business id (bus_…).")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@with_app
def create_merchant_user(app, business_id, email, password):
    """Create a dashboard login for a business."""
    from peewee import IntegrityError

    from core.auth import create_merchant_user as create

    try:
        user = create(_record("Business", business_id), email, password)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except IntegrityError:
        raise click.ClickException(f"a merchant user with e-mail {email!r} already exists") from None
    click.echo(user.id)


@main.command("create-api-key")
@click.option("--business", "business_id", required=True, help="The business id (bus_…).")
@click.option("--mode", type=click.Choice(["test", "live"]), default="test", show_default=True)
@click.option("--name", default="")
@with_app
def create_api_key(app, business_id, mode, name):
    """Create an API key and print it once: only its hash is stored."""
    from core.auth import create_api_key as create

    _, raw = create(_record("Business", business_id), mode, name)
    click.echo(raw)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@with_app
def demo(app, as_json):
    """Seed a demo business (idempotently) and print the links, login and API key to try it."""
    if as_json:
        from core.demo import seed

        click.echo(json.dumps(seed(app), indent=2))
        return
    _print_demo(app)


def _print_demo(app):
    """Seed the demo and print what to try, the dashboard login and API key last."""
    from core.demo import seed

    result = seed(app)
    click.echo(f"Demo business: {result['business']['name']} ({result['business']['id']})")
    click.echo(f"  Static link (live): {result['static_links']['live']}")
    click.echo(f"  Static link (test): {result['static_links']['test']}")
    click.echo("  Magic links (single use, 24 hours):")
    for link in result["magic_links"]:
        click.echo(f"    {link['mode']:<4} {link['email']:<24} {link['link']}")
    click.echo(f"  Dashboard: {result['merchant']['url']}  "
               f"{result['merchant']['email']} / {result['merchant']['password']}")
    click.echo(f"  Test-mode API key: {result['api_key']}")



if __name__ == "__main__":
    main()
