"""The sandbox's own tables: tokenized test cards, the ledger of charges and refunds, and the
faults tests inject. They live in the database so every process (web, RQ workers) sees them."""

import peewee as pw

from core.hookspecs import ChargeResult, RefundResult
from core.models import BaseModel, MoneyField


class SandboxToken(BaseModel):
    """A tokenized test card: display details and how charges on it end; never its number."""

    brand = pw.CharField()
    last4 = pw.CharField(max_length=4)
    exp_month = pw.IntegerField()
    exp_year = pw.IntegerField()
    outcome = pw.CharField()  # succeeded, card_declined, insufficient_funds

    class Meta:
        table_name = "sandbox_token"
        id_prefix = "sbx_tok"


class SandboxCharge(BaseModel):
    """One ledger entry: a charge (succeeded or declined) or a refund, once per idempotency key."""

    kind = pw.CharField(max_length=8)  # charge, refund
    idempotency_key = pw.CharField(unique=True)
    token = pw.CharField(null=True)  # the card charged (charges)
    charge_reference = pw.CharField(null=True, index=True)  # the charge refunded (refunds)
    amount = MoneyField()
    currency = pw.CharField(max_length=3)
    status = pw.CharField()  # succeeded, declined
    failure_code = pw.CharField(null=True)
    failure_message = pw.TextField(null=True)
    reference = pw.CharField(null=True, unique=True)  # sbx_ch_… or sbx_re_…, when succeeded
    description = pw.TextField(default="")

    class Meta:
        table_name = "sandbox_charge"
        id_prefix = "sbx_txn"

    def result(self):
        """This entry as the provider reports it: a ``ChargeResult`` or a ``RefundResult``."""
        if self.kind == "refund":
            return RefundResult(status=self.status, reference=self.reference)
        return ChargeResult(status=self.status, reference=self.reference,
                            failure_code=self.failure_code, failure_message=self.failure_message)


class SandboxFault(BaseModel):
    """A pending simulated failure: the next charge takes (deletes) it and fails."""

    after_commit = pw.BooleanField(default=False)  # record the charge first, then fail
    hang_seconds = pw.IntegerField(default=0)  # after recording, stall (a worker to be killed)

    class Meta:
        table_name = "sandbox_fault"
        id_prefix = "sbx_flt"
