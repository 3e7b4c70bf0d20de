"""Events and jobs leave only on the real commit; the modules that move money, queue jobs,
sign people in and notify them depend on each other in one direction only."""

import ast
from pathlib import Path

import pytest

from core import events, jobs
from core.models import Event, PaymentMethod, db
from plugins.mail import outbox_messages

ROOT = Path(__file__).resolve().parent.parent


def emit_update(customer):
    return events.emit("subscription.cancelled", customer.business_id, customer.mode, customer.id,
                       {"subscription_id": "sub_demo", "product_name": "Pro", "status": "cancelled",
                        "currency": "EUR"})


def test_a_job_queued_inside_an_outer_transaction_waits_for_its_commit(app, customer):
    with db.atomic():
        with jobs.transaction():
            emit_update(customer)
        assert outbox_messages(app) == []  # the inner block closed, the outer has not committed
    assert len(outbox_messages(app)) == 1


def test_a_job_queued_inside_a_transaction_that_rolls_back_never_leaves(app, customer):
    with pytest.raises(RuntimeError), db.atomic():
        with jobs.transaction():
            emit_update(customer)
        raise RuntimeError("the outer transaction fails after the inner one closed")
    assert outbox_messages(app) == [] and Event.select().count() == 0


def test_a_rolled_back_savepoint_drops_only_its_own_jobs(app, customer):
    with jobs.transaction():
        kept = emit_update(customer)
        with pytest.raises(RuntimeError), jobs.transaction():
            emit_update(customer)
            raise RuntimeError("the nested change is abandoned")
    assert [e.id for e in Event.select()] == [kept.id]
    assert len(outbox_messages(app)) == 1


def test_a_job_queued_outside_any_transaction_leaves_at_once(app, customer):
    event = Event.create(business=customer.business_id, mode="test", customer=customer,
                         type="subscription.cancelled", data={"product_name": "Pro"})
    jobs.later(events.dispatch, event.id)
    assert Event.get_by_id(event.id).dispatched_at is not None


def _imports(path: Path, modules) -> set[str]:
    """The ``core`` modules a file imports, at the top or inside a function. ``from core.api
    import schemas`` imports ``core.api.schemas``, not the package's ``__init__``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                          else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("core"))
    return found


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (ROOT / "core").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, modules):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _reaches(graph, start, goal) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


@pytest.mark.parametrize("module", ["core.billing", "core.jobs", "core.auth", "core.events"])
def test_the_money_jobs_auth_and_events_modules_import_no_circle(module):
    assert not _reaches(_module_graph(), module, module)


def test_the_api_and_the_web_layer_import_no_circle():
    graph = _module_graph()
    api = [name for name in graph if name.startswith("core.api")]
    assert not (any(_reaches(graph, a, "core.web") for a in api)
                and any(_reaches(graph, "core.web", a) for a in api))


def test_the_queue_module_knows_nothing_of_billing_events_or_sign_in():
    assert _module_graph()["core.jobs"] <= {"core.config", "core.models", "core.plugins"}


def test_one_core_function_saves_payment_methods():
    makers = [str(path.relative_to(ROOT)) for folder in ("core", "plugins")
              for path in (ROOT / folder).rglob("*.py")
              if "PaymentMethod.create(" in path.read_text()]
    assert makers == []


def test_saving_the_same_card_twice_keeps_one_payment_method(app, customer):
    from core.plugins import registry

    card = registry(app).provider("sandbox").tokenize(customer=customer, source="pm_card_visa")
    first = PaymentMethod.save_card(customer, "sandbox", card)
    assert PaymentMethod.save_card(customer, "sandbox", card).id == first.id
