"""Realistic Stripe traffic for the demo, through the official ``stripe`` library.

Two sources, as in production: localstripe's own signed webhooks for what it can
emit (customers, subscriptions, invoices, payment intents: successful, declined and
3-D Secure), and fixture-built signed events for what it cannot (the dispute
lifecycle, ``charge.refunded`` with and without the refunds list, a trial ending,
an invoice marked uncollectible). At the end of each round the driver also sends
what localstripe never emits for its own objects (cards attached and detached, the
failed first invoice of a subscription and its payment, a failed 3-D Secure payment,
refunds) and settles same-second ordering (customers), each event built from the
object as the API answers a second after the round, as Stripe would have sent it.
Fixture events always point at objects that
exist in localstripe, and the objects they carry (and the events themselves) are
registered in the Stripe front's store, so the API the pipeline reads says what the
events said: refund lookups and the nightly reconciliation find no false difference.
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import stripe

from stripe_pipeline.devtools import fixture_events as fx

if TYPE_CHECKING:
    from stripe_pipeline.devtools.stripe_peer import StripePeer

PEOPLE = [
    ("Ada Lovelace", "ada"),
    ("Grace Hopper", "grace"),
    ("Alan Turing", "alan"),
    ("Katherine Johnson", "katherine"),
    ("Edsger Dijkstra", "edsger"),
    ("Barbara Liskov", "barbara"),
    ("Donald Knuth", "donald"),
    ("Frances Allen", "frances"),
]
PLANS = [
    ("demo-starter-monthly", "Starter", 900, "usd"),
    ("demo-pro-monthly", "Pro", 2900, "usd"),
    ("demo-team-monthly", "Team", 9900, "eur"),
]
CARD_3DS = "4000000000003220"  # requires authentication on every payment
CARD_OK = "pm_card_visa"
CARD_FAILS_ON_CHARGE = "pm_card_chargeCustomerFail"  # attaches, then every charge declines


@dataclass
class Ledger:
    """What a round created, so fixture events can point at real localstripe objects."""

    charges: list[dict[str, Any]] = field(default_factory=list)
    refunds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    customers: list[str] = field(default_factory=list)
    subscriptions: list[tuple[str, str]] = field(default_factory=list)  # (sub, customer)
    declined_customers: list[str] = field(default_factory=list)
    payment_methods: list[str] = field(default_factory=list)
    failed_intents: list[str] = field(default_factory=list)
    failed_invoices: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def next_second() -> None:
    """Sleep into the next whole second: events sent after it order after the round's."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


class TrafficDriver:
    """Drives one localstripe account and the receiver like a small SaaS business would."""

    def __init__(
        self,
        api_base: str,
        api_key: str,
        webhook_url: str,
        webhook_secret: str,
        say: Callable[[str], None] = print,
        seed: int | None = None,
        stripe_front: StripePeer | None = None,
    ) -> None:
        self.api_base = api_base
        self.stripe_front = stripe_front
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.say = say
        self.random = random.Random(seed)
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base, "files": api_base, "connect": api_base},
            max_network_retries=2,
        )
        self._people = itertools.cycle(PEOPLE)
        self._plans: list[tuple[str, int]] | None = None

    # -- setup ---------------------------------------------------------------------
    def plans(self) -> list[tuple[str, int]]:
        """Products and monthly plans; reused from localstripe's saved state on a rerun."""
        if self._plans is None:
            plans = []
            for plan_id, name, amount, currency in PLANS:
                try:
                    self.client.v1.plans.retrieve(plan_id)
                except stripe.InvalidRequestError:
                    product = self.client.v1.products.create(params={"name": f"Demo {name}"})
                    self.client.v1.plans.create(
                        params={
                            "id": plan_id,
                            "product": product.id,
                            "amount": amount,
                            "currency": currency,
                            "interval": "month",
                        }
                    )
                plans.append((plan_id, amount))
            self._plans = plans
        return self._plans

    # -- one round -----------------------------------------------------------------
    def run_round(self, customers: int = 6, fixture_events: bool = True) -> dict[str, int]:
        """Customer stories through the API, then the fixture-built events; returns counts."""
        ledger = Ledger()
        started = time.monotonic()
        self.say(f"traffic: {customers} customer(s) through the Stripe API at {self.api_base}")
        for index in range(customers):
            self.customer_story(index, ledger)
        self.settle(ledger, charges_refunded=not fixture_events)
        if fixture_events:
            self.fixture_stories(ledger)
        summary = dict(sorted(ledger.counts.items()))
        details = ", ".join(f"{n} {what}" for what, n in summary.items())
        self.say(f"traffic: done in {time.monotonic() - started:.1f} s: {details}")
        return summary

    def customer_story(self, index: int, ledger: Ledger) -> None:
        """Sign up, subscribe, pay once; every third declines, every third needs 3-D Secure."""
        name, handle = next(self._people)
        customer = self.client.v1.customers.create(
            params={
                "name": name,
                "email": f"{handle}+{secrets.token_hex(3)}@example.com",
                "metadata": {"source": "stripe-pipeline dev"},
            }
        )
        ledger.customers.append(customer.id)
        ledger.counts["customers"] += 1
        kind = ("card", "declining card", "3-D Secure card")[index % 3]
        self.say(f"traffic: customer {customer.id} ({name}) pays with a {kind}")

        if index % 3 == 1:
            self._declined_story(customer.id, ledger)
            return
        card = self._attach(customer.id, CARD_OK, ledger)
        ledger.counts["payment methods attached"] += 1
        plan_id, _ = self.plans()[index % len(self.plans())]
        subscription = self.client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"plan": plan_id}]}
        )
        ledger.subscriptions.append((subscription.id, customer.id))
        ledger.counts["subscriptions"] += 1

        if index % 3 == 2:
            self._three_d_secure_story(customer.id, ledger, succeed=index % 2 == 0)
        charge = self._pay(customer.id, card, self._amount(), ledger)
        if charge and index % 2 == 0:
            self._refund(charge, ledger, partial=index % 4 == 0)
        # the customer swaps cards: attach a new one, detach the old one
        self._attach(customer.id, CARD_OK, ledger)
        self.client.v1.payment_methods.detach(card)
        ledger.counts["payment methods detached"] += 1
        if index % 4 == 3:
            self.client.v1.subscriptions.cancel(subscription.id)
            ledger.counts["subscriptions canceled"] += 1

    def _amount(self) -> int:
        return self.random.choice([1200, 2500, 4900, 7500, 12900, 19900])

    def _attach(self, customer_id: str, payment_method: str, ledger: Ledger) -> str:
        pm = self.client.v1.payment_methods.attach(payment_method, params={"customer": customer_id})
        ledger.payment_methods.append(pm.id)
        self.client.v1.customers.update(
            customer_id, params={"invoice_settings": {"default_payment_method": pm.id}}
        )
        return pm.id

    def _pay(
        self, customer_id: str, payment_method: str, amount: int, ledger: Ledger
    ) -> dict[str, Any] | None:
        intent = self.client.v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": "usd",
                "customer": customer_id,
                "payment_method": payment_method,
                "confirm": True,
            }
        )
        ledger.counts["payments succeeded"] += 1
        charge = intent.latest_charge
        if charge is None:
            return None
        charge_dict = (
            _as_dict(charge)
            if not isinstance(charge, str)
            else _as_dict(self.client.v1.charges.retrieve(charge))
        )
        charge_dict.setdefault("payment_intent", intent.id)
        ledger.charges.append(charge_dict)
        return charge_dict

    def _declined_story(self, customer_id: str, ledger: Ledger) -> None:
        """The card attaches but every charge declines: a failed payment, then dunning."""
        card = self._attach(customer_id, CARD_FAILS_ON_CHARGE, ledger)
        ledger.counts["payment methods attached"] += 1
        ledger.declined_customers.append(customer_id)
        try:
            self.client.v1.payment_intents.create(
                params={
                    "amount": self._amount(),
                    "currency": "usd",
                    "customer": customer_id,
                    "payment_method": card,
                    "confirm": True,
                }
            )
        except stripe.CardError as exc:
            ledger.counts["payments declined"] += 1
            self.say(f"traffic:   declined as expected ({exc.code})")
        try:
            plan_id, _ = self.plans()[1]
            sub = self.client.v1.subscriptions.create(
                params={"customer": customer_id, "items": [{"plan": plan_id}]}
            )
            ledger.subscriptions.append((sub.id, customer_id))
            ledger.counts["subscriptions (first invoice declined)"] += 1
            self._note_failed_invoice(sub, ledger)
        except stripe.StripeError:
            ledger.counts["subscriptions refused"] += 1

    def _three_d_secure_story(self, customer_id: str, ledger: Ledger, *, succeed: bool) -> None:
        """A payment that needs authentication: requires_action, then the customer decides."""
        pm = self.client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": CARD_3DS, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        self.client.v1.payment_methods.attach(pm.id, params={"customer": customer_id})
        ledger.payment_methods.append(pm.id)
        intent = self.client.v1.payment_intents.create(
            params={
                "amount": self._amount(),
                "currency": "usd",
                "customer": customer_id,
                "payment_method": pm.id,
                "confirm": True,
            }
        )
        ledger.counts["3-D Secure challenges"] += 1
        if intent.status == "requires_action":
            # localstripe's stand-in for the customer's bank page
            self._localstripe_post(
                f"/v1/payment_intents/{intent.id}/_authenticate",
                {"client_secret": intent.client_secret, "success": "true" if succeed else "false"},
            )
            if not succeed:
                ledger.failed_intents.append(intent.id)
            outcome = "authenticated" if succeed else "failed authentication"
            ledger.counts[f"3-D Secure {outcome}"] += 1
            self.say(f"traffic:   3-D Secure payment {intent.id} {outcome}")

    def _note_failed_invoice(self, subscription: Any, ledger: Ledger) -> None:
        """A subscription's first invoice that declined: its invoice and payment failed."""
        invoice_id = _as_dict(subscription).get("latest_invoice")
        if isinstance(invoice_id, dict):
            invoice_id = invoice_id.get("id")
        if not invoice_id:
            return
        invoice = _as_dict(self.client.v1.invoices.retrieve(invoice_id))
        if invoice.get("status") != "open":
            return
        ledger.failed_invoices.append(invoice_id)
        intent = invoice.get("payment_intent")
        intent_id = intent.get("id") if isinstance(intent, dict) else intent
        if intent_id:
            ledger.failed_intents.append(intent_id)

    def settle(self, ledger: Ledger, *, charges_refunded: bool) -> None:
        """Send what localstripe did not emit for this round's objects, a second later.

        Each event carries the object as the API answers now, so whatever order the
        receiver sees them in, the pipeline ends where Stripe is: nothing is left for the
        nightly reconciliation to find. ``charges_refunded``: also the refunded charges
        (the first round's fixture stories send those in today's shape instead).
        """
        v1 = self.client.v1
        next_second()
        events: list[dict[str, Any]] = []
        for customer_id in ledger.customers:  # default cards changed within one second
            customer = _as_dict(v1.customers.retrieve(customer_id))
            events.append(fx.event("customer.updated", customer))
        for pm_id in dict.fromkeys(ledger.payment_methods):
            method = _as_dict(v1.payment_methods.retrieve(pm_id))
            kind = "attached" if method.get("customer") else "detached"
            events.append(fx.event(f"payment_method.{kind}", method))
        for invoice_id in ledger.failed_invoices:
            invoice = _as_dict(v1.invoices.retrieve(invoice_id))
            events.append(fx.event("invoice.payment_failed", invoice))
        for intent_id in ledger.failed_intents:
            intent = _as_dict(v1.payment_intents.retrieve(intent_id))
            events.append(fx.event("payment_intent.payment_failed", intent))
        for charge_id, refunds in ledger.refunds.items():
            for refund in refunds:
                obj = _as_dict(v1.refunds.retrieve(refund["id"]))
                events.append(fx.event("refund.created", obj))
            if charges_refunded:
                charge = _as_dict(v1.charges.retrieve(charge_id))
                events.append(fx.event("charge.refunded", charge))
        for evt in events:
            self._register("events", evt)
            status = fx.deliver(self.webhook_url, self.webhook_secret, evt)
            if status >= 300:
                self.say(f"traffic: receiver answered {status} to {evt['type']} {evt['id']}")
        ledger.counts["events localstripe does not emit, sent"] += len(events)

    def _refund(self, charge: dict[str, Any], ledger: Ledger, *, partial: bool) -> None:
        amount = charge["amount"] // 2 if partial else charge["amount"]
        refund = self.client.v1.refunds.create(params={"charge": charge["id"], "amount": amount})
        ledger.refunds.setdefault(charge["id"], []).append(_as_dict(refund))
        ledger.counts["refunds"] += 1

    def _localstripe_post(self, path: str, data: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{self.api_base}{path}",
            data=urllib.parse.urlencode(data).encode(),
            headers={"Authorization": f"Bearer {self.api_key}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    # -- what localstripe cannot emit ---------------------------------------------
    def fixture_stories(self, ledger: Ledger) -> None:
        """Disputes, refunds, a trial ending and an uncollectible invoice, as signed events."""
        now = int(time.time())
        events: list[dict[str, Any]] = []
        # refunded charges last: a customer can dispute a partially refunded charge too
        paid = sorted(ledger.charges, key=lambda c: c["id"] in ledger.refunds)
        lifecycles = [
            # (statuses in order, reason, days to respond)
            (["needs_response", "under_review", "won"], "fraudulent", 2),
            (["needs_response", "under_review", "lost"], "product_not_received", 6),
            (["warning_needs_response"], "general", 9),
        ]
        for charge, (statuses, reason, due) in zip(paid, lifecycles, strict=False):
            dispute_id = fx.new_id("dp")
            for step, status in enumerate(statuses):
                obj = fx.dispute(
                    charge, status, dispute_id=dispute_id, due_in_days=due, reason=reason
                )
                if step == 0:
                    kind = "charge.dispute.created"
                elif status in ("won", "lost", "warning_closed"):
                    kind = "charge.dispute.closed"
                else:
                    kind = "charge.dispute.updated"
                events.append(fx.event(kind, obj, created=now + step))
                self._register("disputes", obj)  # the last step is what Stripe keeps
                if step == 0 and status == "needs_response":
                    events.append(
                        fx.event("charge.dispute.funds_withdrawn", obj, created=now + step)
                    )
            ledger.counts["disputes"] += 1
            self.say(f"traffic: dispute {dispute_id} on {charge['id']}: {' -> '.join(statuses)}")

        for position, (charge_id, refunds) in enumerate(ledger.refunds.items()):
            charge = next(c for c in ledger.charges if c["id"] == charge_id)
            include = position % 2 == 0  # odd ones make the pipeline fetch refunds from the API
            obj = fx.refunded_charge(charge, refunds, include_refunds=include)
            events.append(fx.event("charge.refunded", obj, created=now))
            # retrieved (not expanded) since 2022-11-15, a charge carries no refunds list
            self._register("charges", {k: v for k, v in obj.items() if k != "refunds"})
            ledger.counts["charge.refunded events"] += 1

        for sub_id, _ in ledger.subscriptions[:1]:
            obj = fx.trialing_subscription(_as_dict(self.client.v1.subscriptions.retrieve(sub_id)))
            events.append(fx.event("customer.subscription.trial_will_end", obj, created=now))
            self._register("subscriptions", obj)
            ledger.counts["trials ending"] += 1

        for customer_id in ledger.declined_customers[:1]:
            sub_id = next((s for s, c in ledger.subscriptions if c == customer_id), None)
            obj = fx.uncollectible_invoice(customer_id, 2900, sub_id)
            events.append(fx.event("invoice.marked_uncollectible", obj, created=now))
            self._register("invoices", obj)
            ledger.counts["invoices marked uncollectible"] += 1

        for evt in events:
            self._register("events", evt)
        if ledger.charges:
            # on purpose neither in /v1/events nor /v1/disputes: Stripe never makes a
            # dispute without a charge; the event only exercises the ticket path
            events.append(self.unappliable_event(ledger.charges[-1]))
            ledger.counts["events the pipeline cannot apply"] += 1

        # Stripe delivers at least once and in no particular order: so do we
        self.random.shuffle(events)
        for evt in events + self.random.sample(events, k=min(2, len(events))):
            status = fx.deliver(self.webhook_url, self.webhook_secret, evt)
            if status >= 300:
                self.say(f"traffic: receiver answered {status} to {evt['type']} {evt['id']}")
            ledger.counts["fixture events delivered"] += 1
        self.say(
            f"traffic: {len(events)} fixture-built signed events POSTed to {self.webhook_url} "
            "(shuffled, two delivered twice)"
        )

    def _register(self, collection: str, obj: dict[str, Any]) -> None:
        """Make the Stripe front serve ``obj`` (by id, in lists, over localstripe's copy)."""
        if self.stripe_front is not None:
            self.stripe_front.put(collection, obj)

    def unappliable_event(self, charge: dict[str, Any]) -> dict[str, Any]:
        """A correctly signed event the pipeline must refuse: it becomes a support ticket.

        A dispute that names neither a charge nor a PaymentIntent cannot be linked to
        any payment; retrying cannot help, so processing escalates it at once. This is
        the demo's way to put a ticket in front of the runbook (docs/runbook.md).
        """
        obj = fx.dispute(
            charge, "needs_response", dispute_id=fx.new_id("dp"), due_in_days=5, reason="general"
        )
        obj["charge"] = None
        obj["payment_intent"] = None
        self.say(f"traffic: dispute {obj['id']} names no charge: expect a support ticket")
        return fx.event("charge.dispute.created", obj)
