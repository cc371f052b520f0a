"""Benchmark: workspaces (issue 12) -- JupyterLab on the cluster through the portal's gateway.

1. "Open workspace" -> first kernel ready, over ``--starts`` starts (plus one warm-up start, not
   counted). Start: ``POST /api/projects/T/P/workspaces {"branch": B}`` with the user's token (what
   the web form, the CLI and the API all call). Phases, each polled at ``--poll`` s:
     placement  the POST -> the API says "running" (sbatch, Slurm placing it, the runner starting
                the container and reporting "started");
     lab        "running" -> the gateway answers 200 on ``.../lab/api/status`` (JupyterLab up);
     kernel     ``POST .../lab/api/kernels`` through the gateway -> over the kernel's channels
                WebSocket (through the gateway) a ``kernel_info_request`` has its
                ``kernel_info_reply`` and the kernel reports ``execution_state: idle``.
   Each workspace is stopped (``POST /api/workspaces/N/stop``) and ended before the next start.
2. WebSocket round trip: ``execute_request`` of ``1`` -> its ``execute_reply`` on one kernel, over
   two open WebSockets -- through the gateway (portal session cookie) and straight to the node's
   Jupyter server (``Authorization: token <credential>``) -- interleaved, ``--rt`` each,
   ``--rt-pause`` s apart (ipykernel answers a request that arrives within ~50 ms of its previous
   reply only after a ~45 ms step of its own, on both paths alike, which would hide the gateway's
   cost); then a quarter as many back to back, for that picture too.
3. Load: ``--load`` open workspaces (CPU-only, 1 core, the one of step 2 included), one kernel and
   one WebSocket through the gateway each; every workspace sends one ``execute_request`` of ``1``
   a second (staggered) for ``--load-seconds``. Measured: the ``slipway serve`` process's CPU
   (utime+stime from /proc/PID/stat; it runs waitress, the gateway thread and the reconciler) as
   % of one core, first with the same WebSockets open and silent (``--idle-seconds``), then under
   the load; the round trips under load; the whole machine's busy % and this client's CPU.

Set-up: a real ``slipway serve`` (tests/support/harness.py) with the local cluster's nodes at
127.0.0.1, the default 5 s reconciler interval, a user with a password (the portal's login form
gives the session cookie the gateway reads), the python image (JupyterLab), the cluster's
workspace policy raised to ``--load`` + 5 workspaces per user.

Usage (a cluster must be up):
    SLURM_CONF=... .venv/bin/python bench/bench_workspaces.py [--starts 10] [--rt 200] \
        [--load 20] [--load-seconds 60]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import cleanup, start_slipway, write_project  # noqa: E402
from tests.support.workspace_live import (  # noqa: E402
    SESSION_COOKIE, gateway_port, job_row, portal_login, token)

USER, PASSWORD, PROJECT = "bench", "bench-secret-pw", "p"
TERMINAL = ("cancelled", "succeeded", "failed")
CLK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------- numbers
def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p95 of 10 samples is the largest)."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "median": statistics.median(xs), "p95": pct(xs, 95), "min": min(xs),
            "max": max(xs)}


def fmt(xs: list[float]) -> str:
    d = summary(xs)
    return (f"median {ms(d['median'])}, p95 {ms(d['p95'])}, min {ms(d['min'])}, max {ms(d['max'])}"
            f" (n={d['n']})")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)




# --------------------------------------------------------------------------- the portal
class Bench:
    def __init__(self, sw, client: aiohttp.ClientSession, cookie: str, poll: float):
        self.sw, self.client, self.poll = sw, client, poll
        self.api_headers = {"Authorization": f"Bearer {sw.tokens[USER]}"}
        self.cookie = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
        self.gw = f"http://127.0.0.1:{gateway_port(sw)}"

    async def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        async with self.client.request(method, f"{self.sw.url}/api/{path}", json=body,
                                       headers=self.api_headers) as r:
            return r.status, await r.json(content_type=None)

    async def start(self, branch: str, **fields: str) -> int:
        status, body = await self.api("POST", f"projects/{USER}/{PROJECT}/workspaces",
                                      {"branch": branch, **fields})
        if status != 201:
            raise RuntimeError(f"start {branch}: {status} {body}")
        return body["workspace"]["id"]

    async def state(self, wid: int) -> dict:
        status, body = await self.api("GET", f"workspaces/{wid}")
        if status != 200:
            raise RuntimeError(f"show {wid}: {status} {body}")
        return body["workspace"]

    async def wait_state(self, wid: int, states=("running",), timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            w = await self.state(wid)
            if w["state"] in states:
                return w
            if w["state"] in TERMINAL or time.monotonic() > deadline:
                raise RuntimeError(f"workspace {wid} is {w['state']}, waited for {states}: {w}")
            await asyncio.sleep(self.poll)

    def lab(self, wid: int) -> str:
        return f"{self.gw}/workspaces/{wid}/lab/"

    async def wait_lab(self, wid: int, timeout: float = 600) -> None:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                async with self.client.get(self.lab(wid) + "api/status", headers=self.cookie) as r:
                    if r.status == 200:
                        return
                    last = f"{r.status} {(await r.text())[:200]}"
            except aiohttp.ClientError as exc:
                last = repr(exc)
            await asyncio.sleep(self.poll)
        raise RuntimeError(f"workspace {wid}: the gateway did not answer 200 in {timeout} s: {last}")

    async def new_kernel(self, wid: int) -> str:
        async with self.client.post(self.lab(wid) + "api/kernels", json={"name": "python3"},
                                    headers=self.cookie) as r:
            if r.status != 201:
                raise RuntimeError(f"workspace {wid}: POST api/kernels {r.status} {(await r.text())[:500]}")
            return (await r.json())["id"]

    def channels(self, wid: int, kid: str, direct: bool = False) -> tuple[str, dict]:
        """The kernel's channels WebSocket: through the gateway (cookie) or the node (token)."""
        path = f"/workspaces/{wid}/lab/api/kernels/{kid}/channels"
        if not direct:
            return f"ws://127.0.0.1:{gateway_port(self.sw)}{path}", self.cookie
        port = int(job_row(self.sw, wid)["port"])
        return (f"ws://127.0.0.1:{port}{path}",
                {"Authorization": f"token {token(self.sw, wid)}"})

    async def connect(self, wid: int, kid: str, direct: bool = False):
        url, headers = self.channels(wid, kid, direct)
        return await self.client.ws_connect(url, headers=headers, max_msg_size=0, heartbeat=None)

    async def stop(self, wid: int) -> None:
        status, body = await self.api("POST", f"workspaces/{wid}/stop")
        if status != 200 and not (status == 409 and "already" in json.dumps(body)):
            raise RuntimeError(f"stop {wid}: {status} {body}")


# ---------------------------------------------------------------------- kernel messages
def message(msg_type: str, content: dict, session: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    return msg_id, json.dumps({
        "header": {"msg_id": msg_id, "msg_type": msg_type, "username": USER, "session": session,
                   "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []})


EXECUTE_1 = {"code": "1", "silent": False, "store_history": False, "user_expressions": {},
             "allow_stdin": False, "stop_on_error": True}


async def round_trip(ws, msg_type: str, content: dict, reply: str, *, want_idle: bool = False,
                     timeout: float = 60) -> float:
    """Send one message; seconds until its ``reply`` (and, with ``want_idle``, the kernel's
    ``idle`` status for it) came back on the same socket."""
    msg_id, text = message(msg_type, content, uuid.uuid4().hex)
    t0 = time.perf_counter()
    await ws.send_str(text)
    got_reply, got_idle = False, not want_idle
    async with asyncio.timeout(timeout):
        while not (got_reply and got_idle):
            frame = await ws.receive()
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the WebSocket said {frame.type} {frame.data!r} before {reply}")
            m = json.loads(frame.data)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t = m["header"]["msg_type"]
            if t == reply:
                got_reply = True
                if reply == "execute_reply" and m["content"].get("status") != "ok":
                    raise RuntimeError(f"execute_reply: {m['content']}")
            elif t == "status" and m["content"].get("execution_state") == "idle":
                got_idle = True
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------- steps
async def open_one(b: Bench, branch: str, **fields: str) -> dict:
    t0 = time.perf_counter()
    wid = await b.start(branch, **fields)
    t_post = time.perf_counter()
    await b.wait_state(wid)
    t_run = time.perf_counter()
    await b.wait_lab(wid)
    t_lab = time.perf_counter()
    kid = await b.new_kernel(wid)
    t_kpost = time.perf_counter()
    ws = await b.connect(wid, kid)
    t_ws = time.perf_counter()
    try:
        await round_trip(ws, "kernel_info_request", {}, "kernel_info_reply", want_idle=True)
    finally:
        await ws.close()
    t_k = time.perf_counter()
    return {"id": wid, "kernel": kid, "post": t_post - t0, "placement": t_run - t0,
            "lab": t_lab - t_run, "kernel_post": t_kpost - t_lab, "ws_open": t_ws - t_kpost,
            "kernel_info": t_k - t_ws, "kernel_ready": t_k - t_lab, "total": t_k - t0,
            "node": job_row(b.sw, wid)["node"]}


async def stop_and_wait(b: Bench, wid: int) -> float:
    t0 = time.perf_counter()
    await b.stop(wid)
    await b.wait_state(wid, TERMINAL, timeout=180)  # ended: /work committed, its GPU free
    return time.perf_counter() - t0


async def step_starts(b: Bench, n: int, gpus: str) -> list[dict]:
    rows = []
    for i in range(n + 1):
        r = await open_one(b, f"s{i}", gpus=gpus)
        r["stop"] = await stop_and_wait(b, r["id"])  # ended before the next start
        r["warmup"] = i == 0
        rows.append(r)
        print(f"  start {'warm-up' if i == 0 else i}: workspace {r['id']} on {r['node']}: "
              f"POST {ms(r['post'])}, placement {ms(r['placement'])}, lab {ms(r['lab'])}, "
              f"kernel {ms(r['kernel_ready'])} (POST {ms(r['kernel_post'])}, WebSocket open "
              f"{ms(r['ws_open'])}, kernel_info {ms(r['kernel_info'])}), "
              f"total {ms(r['total'])}", flush=True)
    return rows


async def step_rt(b: Bench, wid: int, kid: str, n: int, pause: float) -> dict:
    gw = await b.connect(wid, kid)
    direct = await b.connect(wid, kid, direct=True)
    out = {"gateway": [], "direct": []}
    try:
        for _ in range(10):  # warm-up, not counted
            for ws in (gw, direct):
                await round_trip(ws, "execute_request", EXECUTE_1, "execute_reply")
        for i in range(n):
            order = [("gateway", gw), ("direct", direct)]
            if i % 2:
                order.reverse()
            for name, ws in order:
                out[name].append(await round_trip(ws, "execute_request", EXECUTE_1, "execute_reply"))
                await asyncio.sleep(pause)
    finally:
        await gw.close()
        await direct.close()
    return out


async def step_load(b: Bench, wids: list[int], kernels: dict[int, str], pid: int,
                    idle_s: float, load_s: float) -> dict:
    sockets = {w: await b.connect(w, kernels[w]) for w in wids}
    try:
        for w, ws in sockets.items():  # each socket works (and the kernels are warm)
            await round_trip(ws, "execute_request", EXECUTE_1, "execute_reply")
        # the same sockets open, silent: what the portal costs with nothing to carry
        await asyncio.sleep(2)
        procs = jupyter_procs()
        c0, m0, me0, n0 = proc_cpu(pid), machine_cpu(), time.process_time(), node_side(procs)
        t0 = time.perf_counter()
        await asyncio.sleep(idle_s)
        took = time.perf_counter() - t0
        idle = {"cpu": (proc_cpu(pid) - c0) / took, "machine": _busy(m0, machine_cpu()),
                "client": (time.process_time() - me0) / took,
                "node": _node_cpu(n0, node_side(procs), took)}

        rtts: list[float] = []
        errors: list[str] = []
        sent = [0]

        async def one(i: int, ws) -> None:
            start = time.perf_counter() + i / len(wids)  # staggered over the second
            k = 0
            while True:
                due = start + k
                if due >= t_end:
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                try:
                    sent[0] += 1
                    rtts.append(await round_trip(ws, "execute_request", EXECUTE_1, "execute_reply",
                                                 timeout=30))
                except Exception as exc:  # noqa: BLE001 -- reported, the others go on
                    errors.append(f"{type(exc).__name__}: {exc}")
                k += 1

        c0, m0, me0, n0 = proc_cpu(pid), machine_cpu(), time.process_time(), node_side(procs)
        t0 = time.perf_counter()
        t_end = t0 + load_s
        await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets.values())))
        took = time.perf_counter() - t0
        load = {"cpu": (proc_cpu(pid) - c0) / took, "machine": _busy(m0, machine_cpu()),
                "node": _node_cpu(n0, node_side(procs), took),
                "client": (time.process_time() - me0) / took, "seconds": took,
                "sent": sent[0], "replies": len(rtts), "errors": errors[:5],
                "error_count": len(errors), "rtt": rtts}
    finally:
        for ws in sockets.values():
            await ws.close()
    return {"idle": idle, "load": load}


def jupyter_procs() -> dict[int, str]:
    """The node side on this machine: JupyterLab servers and kernels (pid -> which)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ipykernel_launcher" in cmd:
            out[int(d.name)] = "kernel"
        elif "jupyter-lab" in cmd or "jupyter lab" in cmd or "jupyterlab" in cmd:
            if "/bin/sh -c" not in cmd:
                out[int(d.name)] = "lab"
    return out


def node_side(procs: dict[int, str]) -> dict:
    """CPU seconds and RSS (MiB) of ``procs`` by kind."""
    page = os.sysconf("SC_PAGE_SIZE")
    res = {"lab": [0.0, 0.0, 0], "kernel": [0.0, 0.0, 0]}
    for pid, kind in procs.items():
        try:
            cpu = proc_cpu(pid)
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page / 2**20
        except (OSError, IndexError, ValueError):
            continue
        res[kind][0] += cpu
        res[kind][1] += rss
        res[kind][2] += 1
    return {k: {"cpu_s": v[0], "rss_mib": v[1], "count": v[2]} for k, v in res.items()}


def _node_cpu(a: dict, b: dict, seconds: float) -> dict:
    return {k: {"cpu": (b[k]["cpu_s"] - a[k]["cpu_s"]) / seconds, "rss_mib": b[k]["rss_mib"],
                "count": b[k]["count"]} for k in a}


def _busy(a: tuple[float, float], b: tuple[float, float]) -> float:
    return (b[0] - a[0]) / max(1.0, b[1] - a[1])


# -------------------------------------------------------------------------------- main
def push_branches(sw, tmp: Path, branches: list[str]) -> None:
    work = tmp / "work"
    sw.git("clone", "-q", sw.remote(USER, USER, PROJECT), str(work))
    sw.git("checkout", "-qB", branches[0], cwd=work)
    write_project(work)
    sw.git("add", "-A", cwd=work)
    sw.git("commit", "-qm", "bench", cwd=work)
    for br in branches[1:]:
        sw.git("branch", br, cwd=work)
    out = sw.git("push", "-o", "run=no", "origin", *branches, cwd=work).stderr
    if "queued (" in out:
        raise RuntimeError(f"the branch push started a job:\n{out}")


async def run(sw, args) -> dict:
    session = portal_login(sw, USER, PASSWORD)
    result: dict = {}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as client:
        b = Bench(sw, client, session.cookies.get(SESSION_COOKIE), args.poll)
        open_ids: list[int] = []
        try:
            if args.starts:
                print(f"1. open workspace -> first kernel ready ({args.starts} + 1 warm-up, "
                      f"gpus={args.gpus})", flush=True)
                result["starts"] = await step_starts(b, args.starts, args.gpus)
            if args.rt or args.load:
                print(f"2. round trips ({args.rt} each, interleaved), workspace l0", flush=True)
                first = await open_one(b, "l0", cpus="1", time="1h")
                open_ids.append(first["id"])
                kernels = {first["id"]: first["kernel"]}
                result["l0_open"] = first
                if args.rt:
                    result["rt"] = await step_rt(b, first["id"], first["kernel"], args.rt,
                                                 args.rt_pause)
                    for k in ("gateway", "direct"):
                        print(f"  {k}, {args.rt_pause} s apart: {fmt(result['rt'][k])}", flush=True)
                    # back to back: the kernel answers a request that comes within ~50 ms of
                    # its last reply only after a ~45 ms step of its own (same on both paths)
                    b2b = await step_rt(b, first["id"], first["kernel"], max(20, args.rt // 4), 0)
                    result["rt_b2b"] = b2b
                    for k in ("gateway", "direct"):
                        print(f"  {k}, back to back: {fmt(b2b[k])}", flush=True)
            if args.load:
                n = args.load
                print(f"3. load: {n} workspaces, 1 execute_request/s each, {args.load_seconds} s",
                      flush=True)
                t0 = time.perf_counter()
                more = [await b.start(f"l{i}", cpus="1", time="1h") for i in range(1, n)]
                open_ids += more
                await asyncio.gather(*(b.wait_state(w) for w in more))
                t_run = time.perf_counter()
                await asyncio.gather(*(b.wait_lab(w) for w in more))
                t_lab = time.perf_counter()
                for w in more:  # one at a time: each kernel's start is CPU-heavy here
                    kernels[w] = await b.new_kernel(w)
                t_k = time.perf_counter()
                result["load_open"] = {"n": n, "all_running": t_run - t0, "all_labs": t_lab - t0,
                                       "all_kernels": t_k - t0}
                print(f"  {n - 1} more opened: all running after {ms(t_run - t0)}, all labs "
                      f"{ms(t_lab - t0)}, all kernels {ms(t_k - t0)}", flush=True)
                mem = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout
                result["free_m"] = mem
                print(mem, flush=True)
                res = await step_load(b, open_ids, kernels, sw.proc.pid, args.idle_seconds,
                                      args.load_seconds)
                result["load"] = res
                i, ld = res["idle"], res["load"]
                print(f"  silent ({args.idle_seconds} s): slipway serve {i['cpu'] * 100:.1f} % of a "
                      f"core; machine {i['machine'] * 100:.0f} % busy; client {i['client'] * 100:.1f} %",
                      flush=True)
                print(f"  load ({ld['seconds']:.0f} s, {ld['sent']} sent, {ld['replies']} replies, "
                      f"{ld['error_count']} errors): slipway serve {ld['cpu'] * 100:.1f} % of a core; "
                      f"machine {ld['machine'] * 100:.0f} % busy; client {ld['client'] * 100:.1f} %",
                      flush=True)
                for name, part in (("silent", i), ("load", ld)):
                    print(f"  {name}: " + "; ".join(
                        f"{v['count']} {k}s {v['cpu'] * 100:.1f} % of a core, {v['rss_mib']:.0f} MiB RSS"
                        for k, v in part["node"].items()), flush=True)
                if ld["rtt"]:
                    print(f"  round trips under load: {fmt(ld['rtt'])}", flush=True)
                if ld["errors"]:
                    print(f"  errors: {ld['errors']}", flush=True)
        finally:
            for w in open_ids:
                try:
                    await b.stop(w)
                except Exception as exc:  # noqa: BLE001
                    print(f"  stop {w}: {exc}", flush=True)
            for w in open_ids:
                try:
                    await b.wait_state(w, TERMINAL, timeout=180)
                except Exception as exc:  # noqa: BLE001
                    print(f"  end {w}: {exc}", flush=True)
    return result


def report(result: dict) -> None:
    if "starts" in result:
        rows = [r for r in result["starts"] if not r["warmup"]]
        print("\n| start | workspace | node | placement (POST -> running) | JupyterLab up | "
              "kernel ready | total |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for i, r in enumerate(result["starts"]):
            print(f"| {'warm-up' if r['warmup'] else i} | {r['id']} | {r['node']} | "
                  f"{ms(r['placement'])} | {ms(r['lab'])} | {ms(r['kernel_ready'])} | "
                  f"{ms(r['total'])} |")
        for k in ("post", "placement", "lab", "kernel_post", "ws_open", "kernel_info",
                  "kernel_ready", "total"):
            print(f"{k}: {fmt([r[k] for r in rows])}")
    for key in ("rt", "rt_b2b"):
        if key in result:
            g, d = result[key]["gateway"], result[key]["direct"]
            print(f"{key} gateway: {fmt(g)}\n{key} direct: {fmt(d)}\n{key} ratio of medians "
                  f"{statistics.median(g) / statistics.median(d):.2f}, of p95 "
                  f"{pct(g, 95) / pct(d, 95):.2f}")
    brief = {}
    if "starts" in result:
        rows = [r for r in result["starts"] if not r["warmup"]]
        brief["starts"] = {k: {kk: round(vv, 3) for kk, vv in summary([r[k] for r in rows]).items()}
                           for k in ("placement", "lab", "kernel_ready", "total")}
    if "rt" in result:
        brief["rt_ms"] = {k: _ms_summary(v) for k, v in result["rt"].items()}
        brief["rt_ratio_median"] = round(statistics.median(result["rt"]["gateway"])
                                         / statistics.median(result["rt"]["direct"]), 3)
    if "load" in result:
        ld = dict(result["load"]["load"])
        rtt = ld.pop("rtt")
        if rtt:
            ld["rtt_ms"] = _ms_summary(rtt)
        brief["load"] = {"idle": result["load"]["idle"], "load": ld, "open": result["load_open"]}
    print(json.dumps(brief, indent=1, default=str))


def _ms_summary(xs: list[float]) -> dict:
    return {k: v if k == "n" else round(v * 1000, 2) for k, v in summary(xs).items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=10, help="counted starts (0: skip step 1)")
    ap.add_argument("--gpus", default="a4000:1", help="compute of step 1's workspaces")
    ap.add_argument("--rt", type=int, default=200, help="round trips each way (0: skip step 2)")
    ap.add_argument("--rt-pause", type=float, default=0.25,
                    help="seconds between two round trips of step 2")
    ap.add_argument("--load", type=int, default=20, help="open workspaces of step 3 (0: skip)")
    ap.add_argument("--load-seconds", type=float, default=60)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--poll", type=float, default=0.2, help="seconds between polls")
    args = ap.parse_args()
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    # the local cluster's nodes are this machine; the reconciler at its default interval
    sw = start_slipway(cluster_env, SLIPWAY_NODE_ADDRESSES="*:127.0.0.1",
                       SLIPWAY_RECONCILE_INTERVAL="5")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ws-", dir="/tmp"))
    try:
        sw.cli("user", "add", USER, "--unix-user", "sw-alice", "--password", PASSWORD)
        sw.cli("team", "add-funds", USER, "1000.00")
        sw.cli("project", "create", USER, PROJECT, "--gpus", "a4000:1", "--image", "python")
        sw.tokens[USER] = sw.cli("token", "create", USER).stdout.strip()
        sw.cli("workspace", "policy", "--max-per-user", str(max(args.load, 1) + 5))
        branches = [f"s{i}" for i in range(args.starts + 1)] + [f"l{i}" for i in range(max(args.load, 1))]
        push_branches(sw, tmp, branches)
        if "gateway not started" in sw.log_file.read_text(errors="replace"):
            raise RuntimeError(f"slipway serve started no gateway:\n{sw.log_file.read_text()[-2000:]}")
        print(f"slipway serve pid {sw.proc.pid} on {sw.url}, gateway port {gateway_port(sw)}",
              flush=True)
        result = asyncio.run(run(sw, args))
        report(result)
    finally:
        cleanup(sw, cluster_env)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
