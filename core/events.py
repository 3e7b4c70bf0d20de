"""Events and notifications: the outbox, ``emit``, and the one path by which every e-mail and
webhook leaves Portico.

A change records its event with ``emit`` in the same transaction (the outbox), so a
notification exists exactly when the change does. Once that transaction commits, ``dispatch``
queues one ``deliver`` job per notifier plugin (``notify`` hook); one notifier failing never
keeps another from sending. One-off messages that are not stored (a sign-in link) leave through
``send``, which hands them to the same notifiers the same way (``hand``).

Links a notifier may show the customer (``Notification.secrets["link"]``) are minted only when
read (``LazyLink``), by the maker registered for the event type with ``link_for``; this module
imports no one that mints them, so ``auth`` and ``billing`` depend on it and not the reverse.
"""

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta

from flask import current_app

from core.hookspecs import Notification
from core.jobs import enqueue, later
from core.models import Event, new_id, utcnow

log = logging.getLogger("portico.events")

UNDISPATCHED = timedelta(seconds=30)  # an event this old whose deliveries were never queued

# event type -> function(event) -> link or None; filled at import by the modules that mint links
_LINK_MAKERS: dict[str, Callable[[Event], str | None]] = {}


def link_for(event_type: str):
    """Register the function that mints the customer's link for notifications of ``event_type``
    (decorator). Called once at import time, never per request."""

    def register(make: Callable[[Event], str | None]):
        _LINK_MAKERS[event_type] = make
        return make

    return register


def notifiers() -> list[str]:
    """The names of the plugins that implement ``notify``."""
    from core.plugins import registry

    return registry().implementers("notify")


def emit(type: str, business_id: str, mode: str, customer_id: str | None, data: dict,
         told_on_screen: bool = False, customer_only: bool = False) -> Event:
    """Record an event in the current transaction; its deliveries are queued once it commits
    (and never if it rolls back). ``told_on_screen`` and ``customer_only``: see
    ``hookspecs.Notification``."""
    listened, now = bool(notifiers()), utcnow()  # nobody listening: kept, nothing to deliver
    event = Event.create(business=business_id, mode=mode, customer=customer_id, type=type,
                         data=data, created_at=now, dispatched_at=None if listened else now,
                         told_on_screen=told_on_screen, customer_only=customer_only)
    if listened:
        later(dispatch, event.id, job_id=f"dispatch-{event.id}", unique=True)
    return event


def dispatch(event_id: str):
    """Job: queue one delivery job per notifier for an event recorded in the outbox."""
    for name in notifiers():
        enqueue(deliver, event_id, name, job_id=f"deliver-{event_id}-{name}", unique=True)
    Event.update(dispatched_at=utcnow()).where(Event.id == event_id).execute()


def undispatched(now) -> list[str]:
    """Ids of events recorded a while before ``now`` whose deliveries were never queued."""
    return [e.id for e in Event.select(Event.id).where(
        Event.dispatched_at.is_null() & (Event.created_at <= now - UNDISPATCHED))]


def redispatch(now) -> int:
    """Queue the deliveries of events left undispatched (Redis was down); returns how many."""
    ids = undispatched(now)
    for event_id in ids:
        enqueue(dispatch, event_id, job_id=f"dispatch-{event_id}", unique=True)
    return len(ids)


class LazyLink(Mapping):
    """Notification secrets ``{"link": …}`` whose link is minted on first read, so only the
    notifier that shows it to the customer (e-mail) ever issues a token."""

    def __init__(self, mint):
        self._mint, self._link, self._minted = mint, None, False

    def __getitem__(self, key):
        if key != "link":
            raise KeyError(key)
        if not self._minted:
            self._link, self._minted = self._mint(), True
        return self._link

    def __iter__(self):
        return iter(("link",))

    def __len__(self):
        return 1


def hand(notification: Notification, plugin_name: str):
    """Hand one notification to one notifier plugin: the only place notifiers are called."""
    from core.plugins import registry

    registry().call_one("notify", plugin_name, notification=notification,
                        app=current_app._get_current_object())


def deliver(event_id: str, plugin_name: str):
    """Job: hand one recorded event to one notifier plugin (each notifier gets its own job;
    raising retries this delivery alone)."""
    event = Event.get_or_none(Event.id == event_id)
    if event is None:
        log.warning("event %s no longer exists; nothing to deliver", event_id)
        return
    notification = event.notification()
    make = _LINK_MAKERS.get(event.type)
    if make is not None and event.customer_id:
        notification.secrets = LazyLink(lambda: make(event))
    hand(notification, plugin_name)


def send(customer, type_: str, data: dict | None = None, link: str | None = None):
    """Tell every notifier now about a one-off message that is not recorded (a sign-in link);
    one failing never keeps another from sending. ``link`` travels in
    ``Notification.secrets``: it is neither stored nor queued."""
    notification = Notification(id=new_id("ntf"), type=type_, business_id=customer.business_id,
                                mode=customer.mode, data=data or {}, created_at=utcnow(),
                                customer_id=customer.id, secrets={"link": link} if link else {})
    for name in notifiers():
        try:
            hand(notification, name)
        except Exception:
            log.exception("notifier %r could not send %s to customer %s", name, type_, customer.id)
