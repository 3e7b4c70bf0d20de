"""The subscription state machine under random sequences of actions (Hypothesis, stateful).

Whatever customers, merchants, the clock and the provider do, in any order: statuses only
move along the documented graph, every succeeded payment has exactly one invoice and every
invoice a succeeded payment, the money invoiced equals the money the provider charged, an
active subscription owes nothing, a paused one has no charge in flight and is not charged
while paused, and a cancelled one is never charged again.
"""

import os
from datetime import timedelta

import time_machine
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from core import billing
from core.models import Business, Customer, Invoice, Payment, Product, Subscription, utcnow
from plugins.sandbox import charges, fail_next

CARDS = st.sampled_from(["pm_card_visa", "pm_card_chargeDeclined", "pm_card_insufficientFunds"])
CONFIRMATIONS = st.sampled_from(["good", "declined", "lost_answer", "double_submit"])


def test_no_sequence_of_actions_breaks_the_billing_invariants(app, save_card, reset_database):
    class Billing(RuleBasedStateMachine):
        subscriptions = Bundle("subscriptions")

        @initialize()
        def setup(self):
            reset_database()
            self.now = utcnow()
            self.business = Business.create(name="Acme")
            self.customer = Customer.create(business=self.business, mode="test",
                                            email="ann@example.com", name="Ann")
            self.plans = [Product.create(business=self.business, mode="test", name=name,
                                         price=price, currency="EUR", is_recurring=True,
                                         tax_rate_bps=2000, subscription_period_count=10)
                          for name, price in (("Basic", 999), ("Pro", 1500))]
            self.statuses = {}
            self.charged_when_cancelled = {}
            self.charged_when_paused = {}

        def at(self, delta=timedelta(0)):
            self.now += delta
            return time_machine.travel(self.now, tick=False)

        @rule(target=subscriptions, card=CARDS, plan=st.integers(0, 1))
        def subscribe(self, card, plan):
            with self.at(timedelta(minutes=1)):
                sub, _ = billing.create_subscription(self.customer, self.plans[plan],
                                                     save_card(self.customer, card))
            self.statuses[sub.id] = "pending"
            return sub.id

        @rule(sub_id=subscriptions, card=CARDS)
        def switch_card(self, sub_id, card):
            sub = Subscription.get_by_id(sub_id)
            if sub.status == "active":
                with self.at(timedelta(minutes=1)):
                    billing.update_payment_method(sub, save_card(self.customer, card))

        @rule(sub_id=subscriptions)
        def renewal_date_passes(self, sub_id):
            sub = Subscription.get_by_id(sub_id)
            if sub.status == "active":
                wait = max(sub.next_billing_date - self.now, timedelta(0)) + timedelta(minutes=1)
                with self.at(wait):
                    billing.sweep()

        @rule(sub_id=subscriptions, how=CONFIRMATIONS)
        def confirm_card(self, sub_id, how):
            sub = Subscription.get_by_id(sub_id)
            if sub.status != "on_hold":
                return
            source = "pm_card_chargeDeclined" if how == "declined" else "pm_card_visa"
            card = save_card(self.customer, source)
            with self.at(timedelta(minutes=1)):
                if how == "lost_answer":
                    fail_next(after_commit=True)
                billing.update_payment_method(sub, card)
                if how == "double_submit":
                    billing.update_payment_method(sub, card)
            if how == "lost_answer":
                with self.at(billing.STALE_CHARGE + timedelta(minutes=1)):
                    billing.sweep()

        @rule(sub_id=subscriptions, at_next=st.booleans())
        def cancel(self, sub_id, at_next):
            sub = Subscription.get_by_id(sub_id)
            try:
                with self.at(timedelta(minutes=1)):
                    billing.cancel(sub, at_next_billing_date=at_next)
            except billing.BillingError:  # refused only when there is nothing left to cancel
                assert sub.status != "active"

        @rule(sub_id=subscriptions)
        def undo_cancel(self, sub_id):
            sub = Subscription.get_by_id(sub_id)
            if sub.cancel_at_next_billing_date:
                with self.at(timedelta(minutes=1)):
                    billing.undo_cancel(sub)

        @rule(sub_id=subscriptions, plan=st.integers(0, 1))
        def change_plan(self, sub_id, plan):
            sub = Subscription.get_by_id(sub_id)
            if sub.status == "active" and sub.product_id != self.plans[plan].id:
                with self.at(timedelta(hours=1)):
                    billing.change_plan(sub, self.plans[plan])

        @rule(sub_id=subscriptions, resume_later=st.booleans())
        def pause_or_resume(self, sub_id, resume_later):
            sub = Subscription.get_by_id(sub_id)
            with self.at(timedelta(minutes=1)):
                try:
                    if sub.status == "paused":
                        billing.resume(sub)
                    elif sub.status == "active":
                        billing.pause(sub, resume_at=self.now + timedelta(days=20) if resume_later
                                      else None)
                except billing.BillingError as refused:  # a charge in flight, or a scheduled end
                    assert refused.code in ("PREVIOUS_PAYMENT_PENDING", "CANCELLATION_SCHEDULED")

        @invariant()
        def a_paused_subscription_is_never_charged(self):
            for sub in Subscription.select().where(Subscription.status == "paused"):
                charged = Payment.select().where(Payment.subscription == sub)
                assert not charged.where(Payment.status.in_(billing.OPEN)).exists()
                paid = charged.where(Payment.status == "succeeded").count()
                assert self.charged_when_paused.setdefault((sub.id, sub.paused_at), paid) == paid

        @invariant()
        def statuses_follow_the_graph(self):
            for sub in Subscription.select():
                before = self.statuses.get(sub.id)
                assert before is None or sub.status == before or \
                    sub.status in billing.TRANSITIONS.get(before, ()), (before, sub.status)
                self.statuses[sub.id] = sub.status

        @invariant()
        def succeeded_payments_and_invoices_match_one_to_one(self):
            invoiced = [i.payment_id for i in Invoice.select()]
            succeeded = [p.id for p in Payment.select().where(Payment.status == "succeeded")]
            assert sorted(invoiced) == sorted(succeeded)

        @invariant()
        def money_invoiced_equals_money_charged(self):
            assert sum(i.total for i in Invoice.select()) == sum(c.amount for c in charges())
            assert all(i.subtotal + i.tax == i.total for i in Invoice.select())

        @invariant()
        def an_active_subscription_owes_nothing(self):
            for sub in Subscription.select().where(Subscription.status == "active"):
                last = (Payment.select().where((Payment.subscription == sub)
                                               & (Payment.kind.in_(("renewal", "arrears", "new"))))
                        .order_by(Payment.created_at.desc(), Payment.id).first())
                assert last is None or last.status == "succeeded", last.kind

        @invariant()
        def a_cancelled_subscription_is_never_charged_again(self):
            for sub in Subscription.select().where(Subscription.status == "cancelled"):
                paid = Payment.select().where((Payment.subscription == sub)
                                              & (Payment.status == "succeeded")).count()
                assert self.charged_when_cancelled.setdefault(sub.id, paid) == paid

    examples = int(os.environ.get("PORTICO_HYPOTHESIS_EXAMPLES", "25"))
    run_state_machine_as_test(Billing, settings=settings(
        max_examples=examples, stateful_step_count=20, deadline=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=list(HealthCheck)))
