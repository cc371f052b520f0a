"""The job's PORT on this node: the spec's when it is free, else a free one in the portal's range."""
from __future__ import annotations

import random
import socket

from .events import say
from .spec import RunnerSpec


def port_is_free(port: int) -> bool:
    """Nothing on this node listens on ``port`` (a bind to it succeeds)."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this node
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def ensure_free_port(spec: RunnerSpec, *, is_free=port_is_free, tries: int = 200) -> int | None:
    """The port the job gets: the spec's ``PORT`` when it is free on this node, else a free
    one in ``spec.port_min``..``spec.port_max`` (the only ports the portal accepts in the
    started event; written into ``spec.env``). Up to ``tries`` distinct ports are tried, in
    random order. None when the spec has no PORT."""
    raw = spec.env.get("PORT")
    if raw is None:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = None
    if port is not None and is_free(port):
        return port
    rng = random.SystemRandom()
    span = range(spec.port_min, spec.port_max + 1)
    for candidate in rng.sample(span, min(tries, len(span))):
        if candidate != port and is_free(candidate):
            say(f"slipway: port {raw} is taken on this node; the job gets PORT={candidate}")
            spec.env["PORT"] = str(candidate)
            return candidate
    say(f"slipway: no free port found in {spec.port_min}-{spec.port_max} on this node; "
        f"PORT stays {raw}")
    return port
