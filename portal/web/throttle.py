"""Failed-login throttle: too many wrong passwords for one account, or from one address, within
a window refuse further attempts (HTTP 429) without checking the password at all, so a password
cannot be guessed at the speed of the server (or of the LDAP server behind it).

Each attempt is counted *before* the password is checked (``begin``), under one lock, so a burst
of parallel guesses cannot slip past the limit while the first ones are being verified; a right
password takes its own count back (``succeeded``). In memory, per process: the portal is one
process (``slipway serve``); a restart forgets the counts, which only gives an attacker one more
window. Keys are the lower-cased user name and the client address (behind a reverse proxy, set
``trusted_proxies`` so the address is the client's, not the proxy's); the address limit is higher,
since many users may share a NAT. At most ``max_keys`` keys are kept: past that, expired ones are
swept, then the oldest.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable


class LoginThrottle:
    def __init__(self, *, per_user: int = 5, per_address: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000):
        self.limits = {"user": per_user, "addr": per_address}
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str) -> list[tuple[str, str]]:
        return [("user", username.strip().lower()), ("addr", address or "")]

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def _wait(self, keys, now: float) -> float:
        wait = 0.0
        for key in keys:
            q = self._recent(key, now)
            limit = self.limits[key[0]]
            if len(q) >= limit:  # allowed again when enough failures have left the window
                wait = max(wait, q[len(q) - limit] + self.window_s - now)
        return wait

    def _bound(self, now: float) -> None:
        if len(self._failures) <= self.max_keys:
            return
        for key in list(self._failures):
            self._recent(key, now)
        excess = len(self._failures) - self.max_keys * 9 // 10
        if len(self._failures) > self.max_keys and excess > 0:
            # still too many: forget the oldest tenth at once (amortised over the next inserts)
            for key in sorted(self._failures, key=lambda k: self._failures[k][-1])[:excess]:
                del self._failures[key]

    def begin(self, username: str, address: str) -> int:
        """Count an attempt as failed until it succeeds. Returns 0 when it may go ahead, else
        the seconds to wait (and then nothing is counted)."""
        now = self.clock()
        keys = self._keys(username, address)
        with self._lock:
            wait = self._wait(keys, now)
            if wait > 0:
                return max(1, math.ceil(wait))
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            self._bound(now)
        return 0

    def succeeded(self, username: str, address: str) -> None:
        """A right password clears the account's failures and takes back this attempt's count
        on the address."""
        with self._lock:
            self._failures.pop(("user", username.strip().lower()), None)
            q = self._failures.get(("addr", address or ""))
            if q:
                q.pop()
                if not q:
                    del self._failures[("addr", address or "")]

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt may be made (0: allowed now); counts nothing."""
        now = self.clock()
        with self._lock:
            wait = self._wait(self._keys(username, address), now)
        return max(1, math.ceil(wait)) if wait > 0 else 0
