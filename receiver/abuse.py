"""Per-address sliding-window limit on invalid requests.

Only requests that fail verification are counted, and the limiter is consulted after
the signature check: a correctly signed delivery is never refused, so a flood of
garbage from one address cannot slow or block Stripe. The window lives in each
worker's memory (the effective limit is per worker); memory is bounded by keeping
at most ``limit`` timestamps per address and ``max_addresses`` addresses.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class InvalidRequestLimiter:
    """Counts invalid requests per remote address over a sliding window."""

    def __init__(
        self,
        limit_per_minute: int,
        *,
        window_seconds: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(0, limit_per_minute)
        self.window = window_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def record_invalid(self, address: str | None) -> bool:
        """Count one invalid request; True when the address is now over its limit.

        The request that crosses the limit is itself refused (429), as are all
        further ones until old entries leave the window.
        """
        if self.limit <= 0:
            return False
        key = address or "-"
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque(maxlen=self.limit + 1)
                if len(self._hits) > self.max_addresses:
                    self._hits.popitem(last=False)
            else:
                self._hits.move_to_end(key)
            cutoff = now - self.window
            while hits and hits[0] <= cutoff:
                hits.popleft()
            hits.append(now)
            return len(hits) > self.limit

    def is_blocked(self, address: str | None) -> bool:
        """True while the address has more than ``limit`` invalid requests in the window."""
        if self.limit <= 0:
            return False
        with self._lock:
            hits = self._hits.get(address or "-")
            if not hits:
                return False
            cutoff = self._clock() - self.window
            return sum(1 for t in hits if t > cutoff) > self.limit
