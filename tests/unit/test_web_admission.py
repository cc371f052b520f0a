"""The admission gate: short requests first come first served, long ones never wait on it."""
from __future__ import annotations

import threading
import time

import pytest

from portal.web.admission import AdmissionMiddleware, FifoGate


def _wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def test_gate_hands_slots_to_waiters_in_arrival_order():
    gate = FifoGate(1)
    gate.acquire()
    order: list[int] = []

    def worker(k):
        gate.acquire()
        order.append(k)
        gate.release()

    threads = []
    for k in range(6):
        t = threading.Thread(target=worker, args=(k,))
        t.start()
        threads.append(t)
        _wait_for(lambda: gate.waiting == k + 1)  # k+1 queued, in this order
    gate.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4, 5]


def test_gate_never_admits_more_than_its_slots():
    gate, running, peak, lock = FifoGate(3), [0], [0], threading.Lock()

    def worker():
        gate.acquire()
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        gate.release()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 3 and running[0] == 0 and gate.waiting == 0


def test_zero_slots_refused():
    with pytest.raises(ValueError):
        FifoGate(0)


def _call(mw, path):
    status = []
    body = mw({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda s, h: status.append(s))
    return status, body


def test_long_requests_bypass_a_full_gate_and_short_ones_wait():
    seen = []

    def app(environ, start_response):
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    mw = AdmissionMiddleware(app, slots=1)
    mw.gate.acquire()  # the one slot is busy
    for path in ("/internal/hooks", "/internal/jobs/3/events", "/healthz", "/jobs/7/proxy/",
                 "/jobs/7/proxy/lab/tree"):
        assert _call(mw, path)[0] == ["200 OK"]
    waiter = threading.Thread(target=_call, args=(mw, "/jobs/7"))
    waiter.start()
    _wait_for(lambda: mw.gate.waiting == 1)
    assert "/jobs/7" not in seen  # a page waits for the slot
    mw.gate.release()
    waiter.join(5)
    assert seen[-1] == "/jobs/7" and mw.gate.waiting == 0


def test_slot_is_given_back_when_the_view_raises_and_before_a_streamed_body():
    def boom(environ, start_response):
        raise RuntimeError("view failed")

    mw = AdmissionMiddleware(boom, slots=1)
    with pytest.raises(RuntimeError):
        _call(mw, "/teams/x")
    mw.gate.acquire()  # not leaked
    mw.gate.release()

    def streaming(environ, start_response):
        start_response("200 OK", [])
        return (chunk for chunk in (b"a", b"b"))

    mw = AdmissionMiddleware(streaming, slots=1)
    _, body = _call(mw, "/teams/x/ledger.csv")
    mw.gate.acquire()  # free while the body has not been read yet
    mw.gate.release()
    assert b"".join(body) == b"ab"
