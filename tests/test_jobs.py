"""Jobs: queued on Redis and run by a real ``portico worker`` process, or in-process without Redis."""

import os
import subprocess
import sys
import uuid
from email.utils import parseaddr
from pathlib import Path

from click.testing import CliRunner

from core import events, jobs
from core.cli import main
from core.models import Event
from plugins.mail import outbox_messages

ROOT = Path(__file__).resolve().parent.parent


def cancelled_event(customer):
    return Event.create(business=customer.business_id, mode=customer.mode, customer=customer,
                        type="subscription.cancelled",
                        data={"subscription_id": "sub_demo", "product_name": "Acme Pro",
                              "status": "cancelled", "currency": "EUR"})


def test_without_redis_jobs_run_in_process(app, customer):
    event = cancelled_event(customer)
    events.dispatch(event.id)
    assert [parseaddr(m["To"])[1] for m in outbox_messages(app)] == ["ann@example.com"]
    assert Event.get_by_id(event.id).dispatched_at is not None


def test_a_real_worker_process_runs_queued_jobs(make_app, redis_url, cli_env, customer):
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": queue_name,
                    "MAIL_OUTBOX": cli_env["PORTICO_MAIL_OUTBOX"]})
    with app.app_context():
        event = cancelled_event(customer)
        events.dispatch(event.id)
        queued = jobs.queue().count
        assert queued == len(app.extensions["portico"].implementers("notify"))
        assert outbox_messages(app) == []

        env = {**os.environ, **cli_env, "PORTICO_REDIS_URL": redis_url,
               "PORTICO_QUEUE_NAME": queue_name}
        worker = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--burst"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr
        assert jobs.queue().count == 0
        assert len(jobs.queue().failed_job_registry) == 0, worker.stderr
        assert [parseaddr(m["To"])[1] for m in outbox_messages(app)] == ["ann@example.com"]


def test_the_same_delivery_is_queued_once(make_app, redis_url, customer):
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}"})
    with app.app_context():
        event = cancelled_event(customer)
        events.dispatch(event.id)
        events.dispatch(event.id)
        assert jobs.queue().count == len(app.extensions["portico"].implementers("notify"))
        jobs.queue().empty()


def test_worker_without_redis_says_so_in_one_line(cli_env):
    result = CliRunner().invoke(main, ["worker", "--burst"])
    assert result.exit_code == 1
    assert "needs PORTICO_REDIS_URL" in result.output
