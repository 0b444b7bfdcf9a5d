"""A small business's Stripe traffic for the reconciliation drill, and chaotic delivery.

The traffic goes through the :class:`~tests.support.stripe_peer.StripePeer`: objects
are made in localstripe (which logs its own events), and every event localstripe
cannot emit is built here from the object as the API answers right after the change
(so the event and the API state agree), or, for disputes, from Stripe's fixture
object kept in the peer's store. Events carry the second the change happened; the
story moves to the next second between steps of one object's lifecycle, as a real
account's events are spread over time, while the objects of one step share seconds
(as one API call's events do).

Per cohort: customers (one updated twice in a moment, one deleted), cards (one
detached), payments
captured (USD and JPY), authorized and left uncaptured, authorized then captured,
declined, 3-D Secure completed and failed; refunds full and partial (two on one
charge); disputes won (withdrawn, evidence, closed, reinstated), lost, and open;
subscriptions with a quantity change, a price change, canceled at period end,
canceled now, and one whose first payment declines; their invoices.

:func:`deliver_with_chaos` then loses a share of the events, duplicates some of the
rest and delivers everything in a seeded random order to a real receiver.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.support.events import CURRENT_API_VERSION, LEGACY_API_VERSION, make_event
from tests.support.receiver_process import sign
from tests.support.stripe_peer import StripePeer

DAY = 86_400
# localstripe's test card numbers
CARD_OK = "4242424242424242"
CARD_3DS = "4000002760003184"  # every payment requires authentication
CARD_DECLINES = "4000000000000341"  # attaches, every charge declines
PLANS = (  # id suffix, amount, currency
    ("basic", 1500, "usd"),
    ("pro", 4900, "usd"),
    ("yen", 3000, "jpy"),
)


def next_second() -> None:
    """Sleep into the next whole second: events of one object's next step then carry
    a later ``created`` than the step before."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.01)


@dataclass
class Cohort:
    """What one cohort made, by role."""

    n: int
    customers: dict[str, str] = field(default_factory=dict)
    cards: dict[str, str] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> PaymentIntent
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)


class DrillTraffic:
    """Runs the story against the peer; ``peer.emitted_events()`` lists its events after."""

    def __init__(self, peer: StripePeer, fixtures: dict[str, Any], *, cohorts: int = 2) -> None:
        self.peer = peer
        self.fixtures = fixtures
        self.cohorts = [Cohort(n) for n in range(cohorts)]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {peer.api_key}"
        self.built = Counter()  # event type -> events built here
        self._tag = f"{int(time.time()) % 100_000:05d}"

    # --- HTTP -----------------------------------------------------------------------

    def post(self, path: str, data: dict[str, Any] | None = None, *, ok=(200,)) -> dict:
        r = self.http.post(f"{self.peer.base_url}{path}", data=data or {}, timeout=30)
        if r.status_code not in ok:
            raise AssertionError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def get(self, path: str) -> dict[str, Any]:
        r = self.http.get(f"{self.peer.base_url}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def delete(self, path: str) -> dict[str, Any]:
        r = self.http.delete(f"{self.peer.base_url}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous: dict[str, Any] | None = None,
        api_version: str = LEGACY_API_VERSION,
    ) -> None:
        """An event localstripe cannot emit, about ``obj`` as the API states it now."""
        event = make_event(
            event_type,
            obj,
            int(time.time()),
            api_version=api_version,
            previous_attributes=previous,
        )
        self.peer.add_event(event)
        self.built[event_type] += 1

    # --- the story ------------------------------------------------------------------

    def run(self) -> None:
        steps: list[Callable[[Cohort], None]] = [
            self.customers_and_cards,
            self.payments,
            self.captures_refunds_authentications,
            self.subscriptions_and_withdrawals,
            self.changes_and_evidence,
            self.closings_and_cancellations,
            self.reinstatements,
        ]
        self.plans()
        for i, step in enumerate(steps):
            if i:
                next_second()
            for cohort in self.cohorts:
                step(cohort)

    def plans(self) -> None:
        product = self.post("/v1/products", {"name": "Drill plans"})
        for suffix, amount, code in PLANS:
            self.post(
                "/v1/plans",
                {
                    "id": f"plan_drill_{self._tag}_{suffix}",
                    "product": product["id"],
                    "amount": str(amount),
                    "currency": code,
                    "interval": "month",
                },
            )

    def plan(self, suffix: str) -> str:
        return f"plan_drill_{self._tag}_{suffix}"

    def customers_and_cards(self, c: Cohort) -> None:
        roles = {
            "ok": CARD_OK,
            "partial": CARD_OK,
            "won": CARD_OK,
            "lost": CARD_OK,
            "yen": CARD_OK,
            "auth": CARD_OK,
            "capture": CARD_OK,
            "declined": CARD_DECLINES,
            "three_ds": CARD_3DS,
            "three_ds_failed": CARD_3DS,
            "gone": CARD_OK,
        }
        for role, number in roles.items():
            customer = self.post(
                "/v1/customers",
                {"email": f"{role}.{c.n}@example.com", "name": f"{role.title()} {c.n}"},
            )
            c.customers[role] = customer["id"]
            c.cards[role] = self.attach_card(customer["id"], number)
            self.post(
                f"/v1/customers/{customer['id']}",
                {"invoice_settings[default_payment_method]": c.cards[role]},
            )
        c.cards["spare"] = self.attach_card(c.customers["ok"], CARD_OK)

    def attach_card(self, customer: str, number: str) -> str:
        method = self.post(
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2031",
                "card[cvc]": "123",
            },
        )
        attached = self.post(f"/v1/payment_methods/{method['id']}/attach", {"customer": customer})
        self.emit("payment_method.attached", attached)
        return method["id"]

    def new_payment(self, c: Cohort, role: str, amount: int, code: str = "usd", **extra) -> dict:
        pi = self.post(
            "/v1/payment_intents",
            {
                "amount": str(amount),
                "currency": code,
                "customer": c.customers[role],
                "payment_method": c.cards[role],
                **extra,
            },
        )
        self.emit("payment_intent.created", pi)
        return pi

    def charge_of(self, pi: dict[str, Any]) -> dict[str, Any]:
        latest = pi["latest_charge"]
        return self.get(f"/v1/charges/{latest['id'] if isinstance(latest, dict) else latest}")

    def payments(self, c: Cohort) -> None:
        amounts = {"ok": 2500, "partial": 9000, "won": 4000, "lost": 3500, "gone": 1200}
        for role, amount in amounts.items():
            pi = self.new_payment(c, role, amount + c.n)
            c.payments[role] = self.post(f"/v1/payment_intents/{pi['id']}/confirm")
            self.emit("charge.succeeded", self.charge_of(c.payments[role]))
        pi = self.new_payment(c, "yen", 5000 + c.n, "jpy")
        c.payments["yen"] = self.post(f"/v1/payment_intents/{pi['id']}/confirm")
        self.emit("charge.succeeded", self.charge_of(c.payments["yen"]))
        for role in ("auth", "capture"):  # authorized only: requires_capture
            pi = self.new_payment(c, role, 7000 + c.n, capture_method="manual")
            pi = self.post(f"/v1/payment_intents/{pi['id']}/confirm")
            assert pi["status"] == "requires_capture", pi["status"]
            c.payments[role] = pi
            self.emit("payment_intent.amount_capturable_updated", pi)
            self.emit("charge.succeeded", self.charge_of(pi))
        pi = self.new_payment(c, "declined", 1999 + c.n)
        self.post(f"/v1/payment_intents/{pi['id']}/confirm", ok=(402,))
        c.payments["declined"] = pi = self.get(f"/v1/payment_intents/{pi['id']}")
        assert pi["status"] == "requires_payment_method", pi["status"]
        self.emit("charge.failed", self.charge_of(pi))
        for role in ("three_ds", "three_ds_failed"):
            pi = self.new_payment(c, role, 4200 + c.n)
            pi = self.post(f"/v1/payment_intents/{pi['id']}/confirm")
            assert pi["status"] == "requires_action", pi["status"]
            c.payments[role] = pi
            self.emit("payment_intent.requires_action", pi)

    def refund(self, pi: dict[str, Any], amount: int | None = None) -> None:
        data = {"payment_intent": pi["id"]}
        if amount is not None:
            data["amount"] = str(amount)
        refund = self.post("/v1/refunds", data)
        self.emit("refund.created", refund)
        self.emit("charge.refunded", self.charge_of(pi))

    def captures_refunds_authentications(self, c: Cohort) -> None:
        pi = c.payments["capture"]
        c.payments["capture"] = self.post(f"/v1/payment_intents/{pi['id']}/capture")
        self.emit("charge.captured", self.charge_of(c.payments["capture"]))
        self.refund(c.payments["ok"])
        self.refund(c.payments["partial"], 2000)
        self.refund(c.payments["yen"], 1500)
        for role, success in (("three_ds", "true"), ("three_ds_failed", "false")):
            pi = c.payments[role]
            pi = self.post(
                f"/v1/payment_intents/{pi['id']}/_authenticate",
                {"client_secret": pi["client_secret"], "success": success},
            )
            c.payments[role] = pi
            if success == "true":
                self.emit("charge.succeeded", self.charge_of(pi))
            else:
                assert pi["status"] == "requires_payment_method", pi["status"]
                self.emit("payment_intent.payment_failed", pi)
        for role, reason in (("won", "fraudulent"), ("lost", "product_not_received")):
            self.open_dispute(c, role, reason)
        self.open_dispute(c, "yen", "general")

    # --- disputes: the peer's own objects, in today's shapes ---------------------------

    def open_dispute(self, c: Cohort, role: str, reason: str) -> None:
        charge = self.charge_of(c.payments[role])
        now = int(time.time())
        dispute = copy.deepcopy(self.fixtures["dispute"])
        dispute.update(
            id=f"dp_drill{self._tag}c{c.n}{role}",
            amount=charge["amount"],
            currency=charge["currency"],
            charge=charge["id"],
            payment_intent=charge["payment_intent"],
            created=now,
            status="needs_response",
            reason=reason,
            is_charge_refundable=True,
            balance_transactions=[],
            livemode=False,
        )
        dispute["evidence_details"] = {
            "due_by": now + 7 * DAY,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        }
        c.disputes[role] = dispute
        self.dispute_step(c, role, "charge.dispute.created")

    def dispute_step(self, c: Cohort, role: str, event_type: str, **changes: Any) -> None:
        dispute = c.disputes[role]
        dispute.update(changes)
        self.peer.put("disputes", dispute)
        self.emit(event_type, dispute, api_version=CURRENT_API_VERSION)

    def balance_transaction(self, dispute: dict[str, Any], amount: int, fee: int) -> dict:
        """A dispute's transaction, as its events embed it and Stripe lists it."""
        return self.peer.put(
            "balance_transactions",
            {
                "id": f"txn_{dispute['id'][3:]}{len(dispute['balance_transactions'])}",
                "object": "balance_transaction",
                "amount": amount,
                "currency": dispute["currency"],
                "fee": fee,
                "net": amount - fee,
                "created": int(time.time()),
                "type": "adjustment",
                "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
                "status": "available",
                "source": dispute["id"],
            },
        )

    # --- subscriptions and later changes ------------------------------------------------

    def subscriptions_and_withdrawals(self, c: Cohort) -> None:
        for role, suffix in (
            ("won", "basic"),
            ("lost", "pro"),
            ("yen", "yen"),
            ("ok", "basic"),
            ("declined", "basic"),
        ):
            sub = self.post(
                "/v1/subscriptions",
                {"customer": c.customers[role], "items[0][plan]": self.plan(suffix)},
            )
            c.subscriptions[role] = sub
        self.first_payment_declined(c)
        for role, dispute in c.disputes.items():
            txn = self.balance_transaction(dispute, -dispute["amount"], 1500)
            balance = [*dispute["balance_transactions"], txn]
            self.dispute_step(
                c,
                role,
                "charge.dispute.funds_withdrawn",
                balance_transactions=balance,
                is_charge_refundable=False,
            )
        spare = self.post(f"/v1/payment_methods/{c.cards['spare']}/detach")
        self.emit("payment_method.detached", spare, previous={"customer": c.customers["ok"]})

    def first_payment_declined(self, c: Cohort) -> None:
        """localstripe only emits ``invoice.created`` (a draft) for a subscription whose
        first payment declines; Stripe also sends these, about the open invoice."""
        invoice = self.get(f"/v1/invoices/{_id(c.subscriptions['declined']['latest_invoice'])}")
        pi = self.get(f"/v1/payment_intents/{_id(invoice['payment_intent'])}")
        assert (invoice["status"], pi["status"]) == ("open", "requires_payment_method")
        self.emit("invoice.finalized", invoice)
        self.emit("invoice.payment_failed", invoice)
        self.emit("payment_intent.payment_failed", pi)
        self.emit("charge.failed", self.charge_of(pi))

    def update_subscription(self, c: Cohort, role: str, data: dict[str, str], previous: dict):
        sub = c.subscriptions[role]
        updated = self.post(f"/v1/subscriptions/{sub['id']}", data)
        c.subscriptions[role] = updated
        self.emit("customer.subscription.updated", updated, previous=previous)

    def item_of(self, c: Cohort, role: str) -> str:
        return c.subscriptions[role]["items"]["data"][0]["id"]

    def changes_and_evidence(self, c: Cohort) -> None:
        self.update_subscription(
            c,
            "won",
            {"items[0][id]": self.item_of(c, "won"), "items[0][quantity]": "3"},
            {"quantity": 1},
        )
        self.update_subscription(
            c,
            "lost",
            {"items[0][id]": self.item_of(c, "lost"), "items[0][plan]": self.plan("basic")},
            {"plan": {"id": self.plan("pro")}},
        )
        self.update_subscription(
            c, "yen", {"cancel_at_period_end": "true"}, {"cancel_at_period_end": False}
        )
        self.refund(c.payments["partial"], 3000)
        # two quick changes: two customer.updated events, most likely of one second,
        # which no lifecycle stage orders (processing keeps a guess, the nightly run
        # fetches the customer)
        customer = c.customers["partial"]
        self.post(f"/v1/customers/{customer}", {"email": f"partial.{c.n}@example.org"})
        self.post(f"/v1/customers/{customer}", {"name": f"Partial {c.n} (new)"})
        for role in ("won", "lost"):
            evidence = dict(
                c.disputes[role]["evidence"],
                customer_name=f"{role.title()} {c.n}",
                uncategorized_text="Delivered and signed for.",
            )
            details = dict(c.disputes[role]["evidence_details"], has_evidence=True)
            details["submission_count"] = 1
            self.dispute_step(
                c,
                role,
                "charge.dispute.updated",
                status="under_review",
                evidence=evidence,
                evidence_details=details,
            )

    def closings_and_cancellations(self, c: Cohort) -> None:
        for role, status in (("won", "won"), ("lost", "lost")):
            details = dict(c.disputes[role]["evidence_details"], due_by=0)
            self.dispute_step(
                c, role, "charge.dispute.closed", status=status, evidence_details=details
            )
        c.subscriptions["ok"] = self.delete(f"/v1/subscriptions/{c.subscriptions['ok']['id']}")
        self.delete(f"/v1/customers/{c.customers['gone']}")

    def reinstatements(self, c: Cohort) -> None:
        dispute = c.disputes["won"]
        txn = self.balance_transaction(dispute, dispute["amount"], 0)
        self.dispute_step(
            c,
            "won",
            "charge.dispute.funds_reinstated",
            balance_transactions=[*dispute["balance_transactions"], txn],
        )


def _id(ref: str | dict[str, Any]) -> str:
    return ref["id"] if isinstance(ref, dict) else ref


# --- delivery -------------------------------------------------------------------------


@dataclass
class Delivery:
    """What chaotic delivery did (printed with the seed when the drill fails)."""

    seed: int
    emitted: int = 0
    lost: list[str] = field(default_factory=list)  # event ids never delivered
    duplicated: list[str] = field(default_factory=list)  # event ids delivered twice
    posts: int = 0
    statuses: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "emitted": self.emitted,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "posts": self.posts,
            "statuses": dict(self.statuses),
        }


def deliver_with_chaos(
    events: list[dict[str, Any]],
    webhook_url: str,
    secret: str,
    *,
    seed: int,
    lost: float = 0.2,
    duplicated: float = 0.1,
) -> Delivery:
    """Lose ``lost`` of the events, deliver the rest shuffled with ``duplicated`` of them
    twice; every POST is signed at its own time (a retry carries a new signature)."""
    rng = random.Random(seed)
    delivery = Delivery(seed, emitted=len(events))
    dropped = set(rng.sample(range(len(events)), round(lost * len(events))))
    kept = [e for i, e in enumerate(events) if i not in dropped]
    twice = rng.sample(range(len(kept)), round(duplicated * len(kept)))
    posts = kept + [kept[i] for i in twice]
    rng.shuffle(posts)
    delivery.lost = [events[i]["id"] for i in sorted(dropped)]
    delivery.duplicated = [kept[i]["id"] for i in sorted(twice)]
    with requests.Session() as http:
        for event in posts:
            body = json.dumps(event).encode()
            response = http.post(
                webhook_url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign(body, secret),
                },
                timeout=30,
            )
            delivery.posts += 1
            delivery.statuses[response.status_code] += 1
    return delivery
