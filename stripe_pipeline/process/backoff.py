"""Exponential backoff with jitter for events that failed with a temporary error.

Retries live in the database (``stripe_events.next_retry_at``), not in a Dagster step,
so they survive runs and restarts. Jitter spreads retries of a burst of failures (a
database blip, a Stripe 429 storm) so they do not all come back in the same second.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Jitter = Literal["full", "equal", "none"]
JITTERS: tuple[str, ...] = ("full", "equal", "none")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before retry number ``attempt`` (1-based), and when to give up.

    ``max_retries`` counts retries after the first attempt: with the default 8, an
    event is tried 9 times; the 9th temporary failure dead-letters it into a ticket.
    Defaults: 30 s, 60 s, 2 min, ... capped at 6 h, so 8 retries span about 2 hours.

    Jitter: ``full`` draws the delay uniformly from [0, d] (best spread, may retry at
    once); ``equal`` from [d/2, d] (never sooner than half the backoff); ``none`` is d.
    """

    base_seconds: float = 30.0
    factor: float = 2.0
    cap_seconds: float = 6 * 3600.0
    max_retries: int = 8
    jitter: Jitter = "equal"

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.cap_seconds < self.base_seconds:
            raise ValueError("need 0 < base_seconds <= cap_seconds")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {JITTERS}")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay of retry ``attempt``: base * factor^(attempt-1), capped."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        if self.factor == 1:
            return self.base_seconds
        # compare exponents, not powers: factor ** 10_000 would overflow a float
        if attempt - 1 >= math.log(self.cap_seconds / self.base_seconds, self.factor):
            return self.cap_seconds
        return min(self.cap_seconds, self.base_seconds * self.factor ** (attempt - 1))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt``, jitter applied."""
        ceiling = self.ceiling(attempt)
        draw = (rng or random).random()
        if self.jitter == "full":
            return ceiling * draw
        if self.jitter == "equal":
            return ceiling / 2 + (ceiling / 2) * draw
        return ceiling

    def next_retry_at(
        self, attempt: int, *, now: datetime | None = None, rng: random.Random | None = None
    ) -> datetime:
        """When retry ``attempt`` becomes due (UTC)."""
        now = now or datetime.now(UTC)
        return now + timedelta(seconds=self.delay(attempt, rng))

    def exhausted(self, failures: int) -> bool:
        """True once ``failures`` temporary failures leave no retry: time to escalate."""
        return failures > self.max_retries

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> RetryPolicy:
        """Build from run config or environment-like values, ignoring unknown keys."""
        known = {"base_seconds", "factor", "cap_seconds", "max_retries", "jitter"}
        kwargs = {k: v for k, v in values.items() if k in known and v is not None}
        for key in ("base_seconds", "factor", "cap_seconds"):
            if key in kwargs:
                kwargs[key] = float(kwargs[key])  # type: ignore[arg-type]
        if "max_retries" in kwargs:
            kwargs["max_retries"] = int(kwargs["max_retries"])  # type: ignore[arg-type]
        return cls(**kwargs)  # type: ignore[arg-type]
