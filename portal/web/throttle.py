"""Failed-login throttle: too many wrong passwords for one account, or from one address, within
a window refuse further attempts (HTTP 429) without checking the password at all, so a password
cannot be guessed at the speed of the server (or of the LDAP server behind it).

In memory, per process: the portal is one process (``slipway serve``); a restart forgets the
counts, which only gives an attacker one more window. Keys are the lower-cased user name and the
client address; the address limit is higher, since many users may share a NAT.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable


class LoginThrottle:
    def __init__(self, *, per_user: int = 5, per_address: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = {"user": per_user, "addr": per_address}
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, username: str, address: str) -> list[tuple[str, str]]:
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

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt may be made (0: allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(username, address):
                q = self._recent(key, now)
                if len(q) >= self.limits[key[0]]:
                    # allowed again when enough of the failures have left the window
                    wait = max(wait, q[len(q) - self.limits[key[0]]] + self.window_s - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(username, address):
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        """A right password clears the account's failures (not the address's)."""
        with self._lock:
            self._failures.pop(("user", username.strip().lower()), None)
