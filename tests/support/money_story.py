"""A month of money for one account, built from Stripe's own fixture objects.

The account settles in USD and also holds EUR and JPY balances. Over 30 days: three
USD charges (one partly refunded, one disputed and lost with Stripe's 15.00 fee), an
adjustment, a USD charge settled in EUR at 0.9234, a JPY charge, and three automatic
payouts that carry all of it to the bank. ``Month`` holds Stripe's final state of
every object (what its API lists), the events that told the story (one of them, the
JPY payout's ``payout.paid``, is lost in delivery), the transactions each payout
carried, and the figures a finance person computes by hand from the statements.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.events import make_event

DAY = 86_400


def day_of(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


@dataclass
class Month:
    start: int
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    carried: dict[str, list[str]] = field(default_factory=dict)

    def at(self, day: int, hour: int = 0) -> int:
        return self.start + day * DAY + hour * 3600

    def keep(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Stripe's final state of an object (replaces an earlier state of it)."""
        items = self.objects.setdefault(collection, [])
        items[:] = [o for o in items if o["id"] != obj["id"]]
        items.append(copy.deepcopy(obj))
        return obj

    def tell(self, event_type: str, obj: dict[str, Any], when: int, *, lose: bool = False):
        event = make_event(event_type, obj, when)
        (self.lost if lose else self.events).append(event)
        return event


def build_month(fx: dict[str, Any], now: int) -> Month:
    # ten in the morning, UTC, thirty days ago
    m = Month(start=(now // DAY - 30) * DAY + 10 * 3600)

    def txn(
        txn_id: str,
        when: int,
        amount: int,
        fee: int,
        currency: str,
        source: str | None,
        kind: str,
        category: str,
        **extra: Any,
    ) -> dict[str, Any]:
        obj = {
            **copy.deepcopy(fx["balance_transaction"]),
            "id": txn_id,
            "created": when,
            "available_on": when + 2 * DAY,
            "amount": amount,
            "fee": fee,
            "fee_details": (
                [
                    {
                        "amount": fee,
                        "currency": currency,
                        "type": "stripe_fee",
                        "description": "Stripe processing fees",
                        "application": None,
                    }
                ]
                if fee
                else []
            ),
            "net": amount - fee,
            "currency": currency,
            "exchange_rate": None,
            "source": source,
            "type": kind,
            "reporting_category": category,
            "status": "available",
            "description": None,
            **extra,
        }
        return m.keep("balance_transactions", obj)

    def charge(ch_id: str, when: int, amount: int, currency: str, txn_id: str) -> dict:
        obj = {
            **copy.deepcopy(fx["charge"]),
            "id": ch_id,
            "created": when,
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "captured": True,
            "refunded": False,
            "currency": currency,
            "balance_transaction": txn_id,
            "payment_intent": None,
            "payment_method": None,
            "customer": None,
            "invoice": None,
            "livemode": False,
            "description": f"order {ch_id}",
        }
        obj["refunds"] = {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{ch_id}/refunds",
        }
        m.keep("charges", obj)
        m.tell("charge.succeeded", obj, when)
        return obj

    # day 1: a USD charge, 2.9% + 30
    charge("ch_m1", m.at(1), 10000, "usd", "txn_m1")
    txn("txn_m1", m.at(1), 10000, 320, "usd", "ch_m1", "charge", "charge")
    # day 3: a USD charge, then 20.00 of it refunded
    ch2 = charge("ch_m2", m.at(3), 5000, "usd", "txn_m2")
    txn("txn_m2", m.at(3), 5000, 175, "usd", "ch_m2", "charge", "charge")
    refund = {
        **copy.deepcopy(fx["refund"]),
        "id": "re_m1",
        "created": m.at(3, 4),
        "amount": 2000,
        "currency": "usd",
        "charge": "ch_m2",
        "payment_intent": None,
        "balance_transaction": "txn_m2r",
        "status": "succeeded",
    }
    m.keep("refunds", refund)
    ch2 = m.keep(
        "charges", {**ch2, "amount_refunded": 2000, "refunds": {**ch2["refunds"], "data": [refund]}}
    )
    m.tell("charge.refunded", ch2, m.at(3, 4))
    m.tell("refund.created", refund, m.at(3, 4))
    txn("txn_m2r", m.at(3, 4), -2000, 0, "usd", "re_m1", "refund", "refund")
    # day 5: a USD charge; day 6 its dispute, lost: the amount and Stripe's 15.00 fee
    charge("ch_m3", m.at(5), 2000, "usd", "txn_m3")
    txn("txn_m3", m.at(5), 2000, 88, "usd", "ch_m3", "charge", "charge")
    withdrawal = txn("txn_m3d", m.at(6), -2000, 1500, "usd", "dp_m1", "adjustment", "dispute")
    dispute = {
        **copy.deepcopy(fx["dispute"]),
        "id": "dp_m1",
        "created": m.at(6),
        "amount": 2000,
        "currency": "usd",
        "charge": "ch_m3",
        "payment_intent": None,
        "reason": "fraudulent",
        "status": "needs_response",
        "is_charge_refundable": False,
        "balance_transactions": [withdrawal],
    }
    m.tell("charge.dispute.created", dispute, m.at(6))
    m.tell("charge.dispute.funds_withdrawn", dispute, m.at(6, 1))
    lost = m.keep("disputes", {**dispute, "status": "lost"})
    m.tell("charge.dispute.closed", lost, m.at(6 + 7))
    # day 7: Stripe corrects the balance by 5.00
    txn(
        "txn_adj1",
        m.at(7),
        -500,
        0,
        "usd",
        None,
        "adjustment",
        "other_adjustment",
        description="Correction",
    )

    def payout(
        po_id: str,
        when: int,
        amount: int,
        currency: str,
        carried: list[str],
        *,
        lose_paid: bool = False,
    ) -> None:
        obj = {
            **copy.deepcopy(fx["payout"]),
            "id": po_id,
            "created": when,
            "amount": amount,
            "currency": currency,
            "arrival_date": when + 2 * DAY,
            "automatic": True,
            "balance_transaction": f"txn_{po_id}",
            "status": "pending",
            "reconciliation_status": "in_progress",
            "livemode": False,
        }
        m.tell("payout.created", obj, when)
        m.tell("payout.updated", {**obj, "status": "in_transit"}, when + 3600)
        paid = {**obj, "status": "paid"}
        m.tell("payout.paid", paid, when + 2 * DAY, lose=lose_paid)
        done = m.keep("payouts", {**paid, "reconciliation_status": "completed"})
        if not lose_paid:
            m.tell("payout.reconciliation_completed", done, when + 2 * DAY + 3600)
        txn(
            f"txn_{po_id}",
            when,
            -amount,
            0,
            currency,
            po_id,
            "payout",
            "payout",
            description="STRIPE PAYOUT",
        )
        m.carried[po_id] = [*carried, f"txn_{po_id}"]

    payout(
        "po_m1",
        m.at(8),
        10417,
        "usd",
        ["txn_m1", "txn_m2", "txn_m2r", "txn_m3", "txn_m3d", "txn_adj1"],
    )
    # day 10: a 100.00 USD charge settled in EUR at 0.9234, fee in EUR; paid out alone
    charge("ch_m4", m.at(10), 10000, "usd", "txn_m4")
    txn("txn_m4", m.at(10), 9234, 293, "eur", "ch_m4", "charge", "charge", exchange_rate=0.9234)
    payout("po_m2", m.at(12), 8941, "eur", ["txn_m4"])
    # day 14: a JPY charge (no minor unit), paid out alone; its payout.paid is lost
    charge("ch_m5", m.at(14), 12000, "jpy", "txn_m5")
    txn("txn_m5", m.at(14), 12000, 432, "jpy", "ch_m5", "charge", "charge")
    payout("po_m3", m.at(16), 11568, "jpy", ["txn_m5"], lose_paid=True)
    # the balance, told as Stripe tells it: not a transaction (kept as ignored)
    balance = {**copy.deepcopy(fx["balance"]), "livemode": False}
    m.tell("balance.available", balance, m.at(18))
    return m


def expected(m: Month) -> dict[str, Any]:
    """The statements, by hand: every figure below is typed, not computed."""
    d = {n: day_of(m.at(n)) for n in range(31)}
    return {
        "balance_daily": {
            (d[1], "usd"): {
                "transactions_count": 1,
                "amount_minor": 10000,
                "fee_minor": 320,
                "net_minor": 9680,
                "net": 96.80,
            },
            (d[3], "usd"): {
                "transactions_count": 2,
                "amount_minor": 3000,
                "fee_minor": 175,
                "net_minor": 2825,
                "net": 28.25,
            },
            (d[5], "usd"): {
                "transactions_count": 1,
                "amount_minor": 2000,
                "fee_minor": 88,
                "net_minor": 1912,
            },
            (d[6], "usd"): {
                "transactions_count": 1,
                "amount_minor": -2000,
                "fee_minor": 1500,
                "net_minor": -3500,
                "fee": 15.00,
                "net": -35.00,
            },
            (d[7], "usd"): {
                "transactions_count": 1,
                "amount_minor": -500,
                "fee_minor": 0,
                "net_minor": -500,
            },
            (d[10], "eur"): {
                "transactions_count": 1,
                "amount_minor": 9234,
                "fee_minor": 293,
                "net_minor": 8941,
                "net": 89.41,
            },
            (d[14], "jpy"): {
                "transactions_count": 1,
                "amount_minor": 12000,
                "fee_minor": 432,
                "net_minor": 11568,
                "net": 11568,
            },
        },
        "balance_change_from_activity": {
            (d[3], "usd", "charge"): {
                "transactions_count": 1,
                "gross_minor": 5000,
                "fee_minor": 175,
                "net_minor": 4825,
            },
            (d[3], "usd", "refund"): {
                "transactions_count": 1,
                "gross_minor": -2000,
                "fee_minor": 0,
                "net_minor": -2000,
            },
            (d[6], "usd", "dispute"): {"gross_minor": -2000, "fee_minor": 1500, "net_minor": -3500},
            (d[7], "usd", "other_adjustment"): {"net_minor": -500, "net": -5.00},
            (d[8], "usd", "payout"): {"transactions_count": 1, "net_minor": -10417, "net": -104.17},
            (d[12], "eur", "payout"): {"net_minor": -8941},
            (d[16], "jpy", "payout"): {"net_minor": -11568, "net": -11568},
        },
        "payout_reconciliation": {
            "po_m1": {
                "status": "paid",
                "payout_amount_minor": 10417,
                "transactions_count": 6,
                "gross_minor": 12500,
                "fee_minor": 2083,
                "transactions_net_minor": 10417,
                "difference_minor": 0,
                "is_balanced": 1,
                "payout_amount": 104.17,
                "difference": 0,
            },
            "po_m2": {
                "currency": "eur",
                "payout_amount_minor": 8941,
                "transactions_count": 1,
                "gross_minor": 9234,
                "fee_minor": 293,
                "difference_minor": 0,
                "payout_amount": 89.41,
            },
            "po_m3": {
                "status": "paid",
                "currency": "jpy",
                "payout_amount_minor": 11568,
                "transactions_net_minor": 11568,
                "difference_minor": 0,
                "payout_amount": 11568,
            },
        },
        "payout_reconciliation_by_category": {
            ("po_m1", "charge"): {
                "transactions_count": 3,
                "gross_minor": 17000,
                "fee_minor": 583,
                "net_minor": 16417,
                "net": 164.17,
            },
            ("po_m1", "refund"): {"transactions_count": 1, "net_minor": -2000},
            ("po_m1", "dispute"): {"gross_minor": -2000, "fee_minor": 1500, "net_minor": -3500},
            ("po_m1", "other_adjustment"): {"net_minor": -500},
            ("po_m2", "charge"): {"gross_minor": 9234, "fee_minor": 293, "net_minor": 8941},
            ("po_m3", "charge"): {"gross_minor": 12000, "fee_minor": 432, "net": 11568},
        },
    }
