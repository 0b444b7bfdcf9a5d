"""Dunning strategies as data: which failure codes are retried, when, and what else happens.

A decline code decides more than any other signal (``insufficient_funds`` is worth a
retry in a few days; ``stolen_card`` must never be retried; ``expired_card`` needs the
customer). The tables below are the whole policy; code only looks them up, so adding a
code or changing a schedule is a one-line data change (or a config override).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

RETRY_LATER = "retry_later"
CUSTOMER_ACTION = "customer_action"
DO_NOT_RETRY = "do_not_retry"


@dataclass(frozen=True)
class Strategy:
    """What a recovery does. ``retry_delays[n]`` is the wait after the n-th failure."""

    name: str
    retry_delays: tuple[timedelta, ...] = ()
    notify_customer: bool = False
    open_ticket: bool = False
    ticket_priority: str = "medium"
    # how severe a strategy is: a recovery never moves to a milder one on a new failure
    severity: int = 0

    @property
    def retries(self) -> bool:
        return bool(self.retry_delays)


# Modelled on card-network guidance and Stripe's Smart Retries: soft declines are
# retried a few times over about two weeks; hard declines never are.
STRATEGIES: dict[str, Strategy] = {
    RETRY_LATER: Strategy(
        RETRY_LATER,
        retry_delays=(
            timedelta(days=1),
            timedelta(days=3),
            timedelta(days=5),
            timedelta(days=7),
        ),
        severity=0,
    ),
    CUSTOMER_ACTION: Strategy(CUSTOMER_ACTION, notify_customer=True, severity=1),
    DO_NOT_RETRY: Strategy(DO_NOT_RETRY, open_ticket=True, ticket_priority="high", severity=2),
}

# decline_code / failure_code / PaymentIntent status -> strategy name
CODE_STRATEGY: dict[str, str] = {
    # soft declines: the same card may work later
    "insufficient_funds": RETRY_LATER,
    "processing_error": RETRY_LATER,
    "try_again_later": RETRY_LATER,
    "generic_decline": RETRY_LATER,
    "card_declined": RETRY_LATER,
    "do_not_honor": RETRY_LATER,
    "issuer_not_available": RETRY_LATER,
    "reenter_transaction": RETRY_LATER,
    "approve_with_id": RETRY_LATER,
    "withdrawal_count_limit_exceeded": RETRY_LATER,
    "card_velocity_exceeded": RETRY_LATER,
    "rate_limit": RETRY_LATER,
    # the customer must act: a new card, corrected details, or authentication
    "expired_card": CUSTOMER_ACTION,
    "incorrect_number": CUSTOMER_ACTION,
    "invalid_number": CUSTOMER_ACTION,
    "incorrect_cvc": CUSTOMER_ACTION,
    "invalid_cvc": CUSTOMER_ACTION,
    "invalid_expiry_month": CUSTOMER_ACTION,
    "invalid_expiry_year": CUSTOMER_ACTION,
    "incorrect_zip": CUSTOMER_ACTION,
    "authentication_required": CUSTOMER_ACTION,
    "payment_intent_authentication_failure": CUSTOMER_ACTION,
    "requires_action": CUSTOMER_ACTION,
    "card_not_supported": CUSTOMER_ACTION,
    "currency_not_supported": CUSTOMER_ACTION,
    "transaction_not_allowed": CUSTOMER_ACTION,
    # hard declines: retrying harms the merchant's standing with the networks
    "fraudulent": DO_NOT_RETRY,
    "stolen_card": DO_NOT_RETRY,
    "lost_card": DO_NOT_RETRY,
    "pickup_card": DO_NOT_RETRY,
    "restricted_card": DO_NOT_RETRY,
    "merchant_blacklist": DO_NOT_RETRY,
    "security_violation": DO_NOT_RETRY,
    "revocation_of_authorization": DO_NOT_RETRY,
    "revocation_of_all_authorizations": DO_NOT_RETRY,
    "stop_payment_order": DO_NOT_RETRY,
}
DEFAULT_STRATEGY = RETRY_LATER


@dataclass(frozen=True)
class RecoveryPolicy:
    """The strategy tables in force; ``with_overrides`` merges deployment config."""

    strategies: Mapping[str, Strategy] = field(default_factory=lambda: dict(STRATEGIES))
    code_strategy: Mapping[str, str] = field(default_factory=lambda: dict(CODE_STRATEGY))
    default_strategy: str = DEFAULT_STRATEGY

    def with_overrides(
        self,
        codes: Mapping[str, str] | None = None,
        retry_delays_hours: Mapping[str, list[float]] | None = None,
    ) -> RecoveryPolicy:
        """A copy with some codes remapped and/or some retry schedules replaced."""
        strategies = dict(self.strategies)
        for name, hours in (retry_delays_hours or {}).items():
            base = strategies[name]
            delays = tuple(timedelta(hours=h) for h in hours)
            strategies[name] = Strategy(
                base.name,
                delays,
                base.notify_customer,
                base.open_ticket,
                base.ticket_priority,
                base.severity,
            )
        code_strategy = {**self.code_strategy, **(codes or {})}
        unknown = set(code_strategy.values()) - set(strategies)
        if unknown:
            raise ValueError(f"unknown strategies in code mapping: {sorted(unknown)}")
        return RecoveryPolicy(strategies, code_strategy, self.default_strategy)

    def choose(
        self,
        *,
        decline_code: str | None = None,
        failure_code: str | None = None,
        payment_status: str | None = None,
    ) -> tuple[Strategy, str]:
        """The strategy for a failure and the code that decided it (``last_error_type``).

        A PaymentIntent waiting for authentication wins; then the decline code (the
        issuer's reason) before the failure code (Stripe's generic category).
        """
        candidates = (
            payment_status if payment_status == "requires_action" else None,
            decline_code,
            failure_code,
        )
        for code in candidates:
            if code and code in self.code_strategy:
                return self.strategies[self.code_strategy[code]], code
        return self.strategies[self.default_strategy], decline_code or failure_code or "unknown"

    def strategy(self, name: str | None) -> Strategy:
        return self.strategies.get(name or "", self.strategies[self.default_strategy])


DEFAULT_POLICY = RecoveryPolicy()
