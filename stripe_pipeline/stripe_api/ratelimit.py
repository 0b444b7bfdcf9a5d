"""A client-side rate limiter shared by every thread that uses one API client.

Stripe allows 100 requests/s in live mode and 25 in test mode and answers 429 above
that. Spacing requests evenly (a token bucket with a burst of one, i.e. GCRA) keeps
every 1-second window at or under the limit, instead of bursting into 429s and backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Thread-safe token bucket: ``acquire()`` blocks until a request may be sent.

    ``burst`` is the bucket size. With the default of 1 consecutive grants are at least
    ``1/rate`` seconds apart, so no 1-second window ever holds more than ``rate`` grants.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # theoretical arrival time of the next request (GCRA); a bucket starts full
        self._tat = clock() - (burst - 1) / self.rate

    def _reserve(self) -> float:
        """Reserve the next slot; returns how long the caller must wait for it."""
        interval = 1.0 / self.rate
        with self._lock:
            now = self._clock()
            earliest = self._tat - (self.burst - 1) * interval
            start = max(now, earliest)
            self._tat = max(self._tat, now - (self.burst - 1) * interval) + interval
            return start - now

    def acquire(self) -> float:
        """Block until a slot is ours; returns the seconds waited."""
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)


def default_rate_for_key(api_key: str) -> float:
    """Stripe's documented limits: 25 requests/s in test mode, 100 in live mode."""
    return 25.0 if api_key.startswith(("sk_test_", "rk_test_")) else 100.0
