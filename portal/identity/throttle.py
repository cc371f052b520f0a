"""Failed-login throttle: wrong passwords slow down the one who makes them, with growing delays,
without letting a stranger lock the real user out.

Three counters, each a count of failures and the time of the last one:

* per (account, address): the first ``per_user`` failures are free; after that each attempt
  from that address at that account must wait 1, 2, 4, … seconds (capped at ``max_delay_s``)
  after the previous failure;
* per address (any account): the same after ``per_address`` failures (a spray of user names
  from one address), higher since many users may share a NAT;
* per account (any address): after ``per_account`` failures the account is under attack, and
  every address that *has been failing* (at this account, or at all) waits a growing delay after
  the account's last failure, however many addresses the attacker rotates through. An address
  that has not been failing is never slowed by the account's counter: the owner, from their own
  address, logs in with the right password at once.

A throttled attempt is refused (HTTP 429, Retry-After) without the password being checked, so a
password cannot be guessed at the speed of the server (or of the LDAP server behind it). Each
attempt is counted *before* the password is checked (``begin``), under one lock, so a burst of
parallel guesses cannot slip past while the first ones are being verified; a right password takes
its own count back (``succeeded``) and forgives that address's failures at that account. A
counter is forgotten ``window_s`` after its last failure. In memory, per process: the portal is
one process (``slipway serve``); a restart forgets the counts. Behind a reverse proxy set
``trusted_proxies`` so the address is the client's, not the proxy's. At most ``max_keys``
counters are kept: past that, expired ones are swept, then the oldest.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable


class LoginThrottle:
    def __init__(self, *, per_user: int = 5, per_address: int = 20, per_account: int | None = None,
                 window_s: float = 300.0, max_delay_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000):
        """``per_user``: free failures per (account, address); ``per_address``: per address;
        ``per_account``: per account from all addresses together (default 4 × ``per_user``)
        before failing addresses are slowed. Delays double from 1 s up to ``max_delay_s``."""
        self.free = {"pair": per_user, "addr": per_address,
                     "user": per_account if per_account is not None else 4 * per_user}
        self.max_delay_s = max_delay_s
        self.window_s = max(window_s, max_delay_s)  # never forget a counter while it still slows
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[tuple[str, ...], list[float]] = {}  # key -> [count, last failure]
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str) -> tuple[tuple[str, ...], ...]:
        user, addr = username.strip().lower(), address or ""
        return ("pair", user, addr), ("addr", addr), ("user", user)

    def _get(self, key: tuple[str, ...], now: float) -> list[float] | None:
        rec = self._failures.get(key)
        if rec is not None and now - rec[1] >= self.window_s:
            del self._failures[key]
            return None
        return rec

    def _delay(self, kind: str, count: float) -> float:
        over = int(count) - self.free[kind]
        return 0.0 if over < 0 else min(self.max_delay_s, 2.0 ** min(over, 32))

    def _wait(self, keys, now: float) -> float:
        pair, addr, user = keys
        wait = 0.0
        failing = False
        for key in (pair, addr):
            rec = self._get(key, now)
            if rec is not None:
                failing = True
                wait = max(wait, rec[1] + self._delay(key[0], rec[0]) - now)
        rec = self._get(user, now)
        if rec is not None and failing:  # the account's ceiling slows only failing addresses
            wait = max(wait, rec[1] + self._delay("user", rec[0]) - now)
        return wait

    def _bound(self, now: float) -> None:
        if len(self._failures) <= self.max_keys:
            return
        for key in list(self._failures):
            self._get(key, now)
        excess = len(self._failures) - self.max_keys * 9 // 10
        if len(self._failures) > self.max_keys and excess > 0:
            # still too many: forget the oldest tenth at once (amortised over the next inserts)
            for key in sorted(self._failures, key=lambda k: self._failures[k][1])[:excess]:
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
                rec = self._get(key, now)
                if rec is None:
                    self._failures[key] = [1, now]
                else:
                    rec[0] += 1
                    rec[1] = now
            self._bound(now)
        return 0

    def succeeded(self, username: str, address: str) -> None:
        """A right password forgives this address's failures at this account and takes back
        this attempt's count on the address and on the account (an attacker's failures at the
        account stay counted)."""
        pair, addr, user = self._keys(username, address)
        with self._lock:
            self._failures.pop(pair, None)
            for key in (addr, user):
                rec = self._failures.get(key)
                if rec is not None:
                    rec[0] -= 1
                    if rec[0] <= 0:
                        del self._failures[key]

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt may be made (0: allowed now); counts nothing."""
        now = self.clock()
        with self._lock:
            wait = self._wait(self._keys(username, address), now)
        return max(1, math.ceil(wait)) if wait > 0 else 0
