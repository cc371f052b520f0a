"""Benchmark: upload of 1 GiB (10 files) through Slipway vs `cp` of the same files into the data dir.

Goal (issue 11): the upload takes at most 1.5x the `cp`, and the server's RSS during the upload
stays within 100 MB of its idle size.

Set-up: a real `slipway serve` (tests/support/harness.py, as the other benches) with a user, its
team, an access token and one dataset repository per round; N files of M MiB of random bytes in a
temporary folder on the same filesystem as the server's data dir (both under /tmp).

Each round, interleaved (same page-cache conditions: the source files are cached, written by
this script; `sync` (untimed) before each measured step so neither starts with the other's dirty
pages still being written back):
* cp: `cp -r SRC DATA_DIR/cp-copies/rN` (no fsync: Slipway's upload does not fsync either);
  `cp+sync` adds `sync -f` of the copy, reported for reference.
* upload: `slipway data push TEAM/dsN SRC --quiet --json` as a subprocess in remote mode
  (SLIPWAY_URL + SLIPWAY_TOKEN, the way a user runs it) into a new repository each round, so the
  server stores everything again (dedupe is per repository). The real CLI runs under a thin
  wrapper that stamps the clock when `data push` starts, when hashing ends (the call that starts
  the upload) and when it exits, to split client start-up, hashing and transfer+commit.
The server's RSS (/proc/PID/status VmRSS) is sampled every 50 ms in a thread: idle (after a
warm-up upload of one small file) and during each upload.

`--stages` measures instead where an upload's time goes, each stage alone on the same files (no
Slipway, no cluster): cp, a Python copy, sha256, a copy + sha256, and the CLI's PUTs (`requests`,
64 MiB `FileSlice`s) to a raw socket sink and to a bare waitress app that reads the body and
discards / hashes / hashes and writes it, with waitress's default `recv_bytes` and with 256 KiB.

Usage (a cluster must be up; `make bench` does that):
    SLURM_CONF=... .venv/bin/python bench/bench_data_upload.py [--files 10] [--mib 100] [--rounds 3]
    .venv/bin/python bench/bench_data_upload.py --stages
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import cleanup, free_port, start_slipway  # noqa: E402

# The real CLI, stamping the wall clock at its phase boundaries on stderr ("BENCH name t").
WRAPPER = r"""
import sys, time
from portal.cli import data_push, main
from portal.cli.remote import RemoteSource
def stamp(what):
    sys.stderr.write(f"BENCH {what} {time.time():.6f}\n"); sys.stderr.flush()
walk, start, commit = data_push.walk, RemoteSource.upload_start, RemoteSource.upload_commit
def walk_(*a, **k):
    stamp("begin"); return walk(*a, **k)
def start_(self, *a, **k):
    stamp("hashed"); return start(self, *a, **k)
def commit_(self, *a, **k):
    v = commit(self, *a, **k); stamp("committed"); return v
data_push.walk, RemoteSource.upload_start, RemoteSource.upload_commit = walk_, start_, commit_
main(sys.argv[1:], prog_name="slipway")
"""


class RssSampler:
    """VmRSS of a process every ``period`` seconds, in a thread, while running."""

    def __init__(self, pid: int, period: float = 0.05):
        self.path, self.period = f"/proc/{pid}/status", period
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> int:
        with open(self.path) as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(self.period)

    def __enter__(self) -> "RssSampler":
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.read())


def make_files(folder: Path, count: int, mib: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        with open(folder / f"part-{i:02d}.bin", "wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1024 * 1024))


def sync() -> None:
    subprocess.run(["sync"], check=True)


def mb(n: float) -> float:
    return round(n / 1e6, 1)


# ------------------------------------------------------------------------------ --stages

def _sink(port: int) -> None:
    """A raw HTTP sink: reads each request's body with recv_into, answers 200."""
    srv = socket.create_server(("127.0.0.1", port))

    def handle(c: socket.socket) -> None:
        buf, data = bytearray(1 << 20), b""
        while True:
            while b"\r\n\r\n" not in data:
                x = c.recv(65536)
                if not x:
                    return
                data += x
            head, _, rest = data.partition(b"\r\n\r\n")
            n = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                     if ln.lower().startswith(b"content-length"))
            left = n - len(rest)
            while left > 0:
                left -= c.recv_into(buf, min(len(buf), left))
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            data = b""

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def _waitress(port: int, recv_bytes: int, mode: dict, out: Path) -> None:
    import waitress

    def app(environ, start):
        stream, left = environ["wsgi.input"], int(environ.get("CONTENT_LENGTH") or 0)
        h = hashlib.sha256() if mode["v"] != "discard" else None
        fh = open(out / "srv.bin", "ab") if mode["v"] == "write" else None
        while left > 0:
            b = stream.read(min(1 << 20, left))
            if not b:
                break
            left -= len(b)
            if h:
                h.update(b)
            if fh:
                fh.write(b)
        if fh:
            fh.close()
        start("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    waitress.serve(app, host="127.0.0.1", port=port, threads=4, max_request_body_size=1 << 40,
                   recv_bytes=recv_bytes, _quiet=True)


def stages(args) -> None:
    import requests

    from portal.cli.data_push import CHUNK_BYTES, FileSlice

    tmp = Path(tempfile.mkdtemp(prefix="bench-upload-stages-", dir="/tmp"))
    try:
        src, out = tmp / "src", tmp / "out"
        make_files(src, args.files, args.mib)
        out.mkdir()
        files = sorted(src.iterdir())
        results = []

        def timed(label, fn):
            sync()
            t0 = time.perf_counter()
            fn()
            results.append((label, time.perf_counter() - t0))
            print(f"{label}: {results[-1][1]:.2f} s", flush=True)

        def hash_all():
            for f in files:
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    while b := fh.read(1 << 20):
                        h.update(b)

        def copy(name, hashing):
            (out / name).mkdir()
            for f in files:
                h = hashlib.sha256()
                with open(f, "rb") as a, open(out / name / f.name, "wb") as b:
                    while x := a.read(1 << 20):
                        b.write(x)
                        if hashing:
                            h.update(x)

        def put_all(port):
            ses = requests.Session()
            for f in files:
                size, off = f.stat().st_size, 0
                with open(f, "rb") as fh:
                    while off < size:
                        n = min(CHUNK_BYTES, size - off)
                        ses.put(f"http://127.0.0.1:{port}/x", data=FileSlice(fh, n),
                                headers={"Content-Length": str(n)}).raise_for_status()
                        off += n
            (out / "srv.bin").unlink(missing_ok=True)

        timed("cp -r", lambda: subprocess.run(["cp", "-r", str(src), str(out / "cp")], check=True))
        timed("Python copy, 1 MiB reads/writes", lambda: copy("py", False))
        timed("sha256 (hashlib, 1 MiB reads): the client's hashing", hash_all)
        timed("Python copy + sha256: the server's write path", lambda: copy("pyh", True))
        sink = free_port()
        threading.Thread(target=_sink, args=(sink,), daemon=True).start()
        mode = {"v": "discard"}
        ports = {}
        for rb in (8192, 256 * 1024):
            ports[rb] = free_port()
            threading.Thread(target=_waitress, args=(ports[rb], rb, mode, out), daemon=True).start()
        time.sleep(1)
        timed("PUTs (requests, 64 MiB FileSlices) to a raw socket sink: the client's sending",
              lambda: put_all(sink))
        for rb, what in ((8192, "discard"), (8192, "hash"), (8192, "write"), (256 * 1024, "discard")):
            mode["v"] = what
            label = {"discard": "discards it", "hash": "hashes it", "write": "hashes and writes it"}[what]
            timed(f"PUTs to waitress (recv_bytes {rb // 1024} KiB), app reads the body and {label}",
                  lambda: put_all(ports[rb]))
        cp_s = results[0][1]
        print("\n| stage | time | x cp |\n| --- | --- | --- |")
        for label, t in results:
            print(f"| {label} | {t:.2f} s | {t / cp_s:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--mib", type=int, default=100, help="size of each file, MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stages", action="store_true", help="where the time goes (no Slipway)")
    args = ap.parse_args()
    if args.stages:
        stages(args)
        return
    cluster_env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    sw = start_slipway(cluster_env)
    src = Path(tempfile.mkdtemp(prefix="bench-upload-src-", dir=str(sw.data_dir.parent)))
    try:
        if os.stat(src).st_dev != os.stat(sw.data_dir).st_dev:
            raise SystemExit(f"{src} and {sw.data_dir} are on different filesystems")
        sw.cli("user", "add", "bench", "--unix-user", "sw-alice")
        token = sw.cli("token", "create", "bench").stdout.strip()
        env = {**sw.env, "SLIPWAY_URL": sw.url, "SLIPWAY_TOKEN": token, "HOME": str(sw.homes)}
        env.pop("SLIPWAY_USER", None)

        def push(repo: str, folder: Path) -> tuple[dict, dict[str, float]]:
            sw.cli("data", "create", f"bench/{repo}", "--kind", "dataset")
            stamps = {"spawn": time.time()}
            res = subprocess.run([sys.executable, "-c", WRAPPER, "data", "push", f"bench/{repo}",
                                  str(folder), "--quiet", "--json"],
                                 env=env, capture_output=True, text=True, cwd=str(src))
            stamps["exit"] = time.time()
            if res.returncode != 0:
                raise RuntimeError(f"data push failed: {res.stdout}\n{res.stderr}")
            stamps.update({ln.split()[1]: float(ln.split()[2]) for ln in res.stderr.splitlines()
                           if ln.startswith("BENCH ")})
            return json.loads(res.stdout), stamps

        rss = RssSampler(sw.proc.pid)
        # Warm-up: one small upload (imports, first requests), then idle.
        small = src / "warm"
        small.mkdir()
        (small / "f").write_bytes(os.urandom(4096))
        push("warmup", small)
        time.sleep(1)
        with rss:
            time.sleep(3)
        idle = max(rss.samples)

        data = src / "data"
        make_files(data, args.files, args.mib)
        total = args.files * args.mib * 1024 * 1024
        copies = sw.data_dir / "cp-copies"
        copies.mkdir()
        rows = []
        for r in range(args.rounds):
            sync()
            t0 = time.perf_counter()
            subprocess.run(["cp", "-r", str(data), str(copies / f"r{r}")], check=True)
            cp_s = time.perf_counter() - t0
            subprocess.run(["sync", "-f", str(copies / f"r{r}")], check=True)
            cp_sync_s = time.perf_counter() - t0

            sync()
            with rss:
                version, st = push(f"ds{r}", data)
            if version.get("size_bytes") != total or version.get("file_count") != args.files:
                raise RuntimeError(f"unexpected version: {version}")
            rows.append({"cp": cp_s, "cp+sync": cp_sync_s, "upload": st["exit"] - st["spawn"],
                         "start-up": st["begin"] - st["spawn"], "hashing": st["hashed"] - st["begin"],
                         "transfer+commit": st["committed"] - st["hashed"],
                         "exit": st["exit"] - st["committed"], "rss_peak": max(rss.samples)})
            shutil.rmtree(copies / f"r{r}")

        print(f"{args.files} files x {args.mib} MiB = {mb(total)} MB; server idle RSS {mb(idle)} MB "
              f"(max of {len(rss.samples)} samples over 3 s after a warm-up upload)\n")
        cols = ("cp", "cp+sync", "upload", "start-up", "hashing", "transfer+commit", "exit")
        print("| round | " + " | ".join(cols) + " | upload/cp | RSS peak | peak-idle |")
        print("|" + " --- |" * (len(cols) + 4))

        def line(label, row):
            print(f"| {label} | " + " | ".join(f"{row[c]:.2f} s" for c in cols)
                  + f" | {row['upload'] / row['cp']:.2f} | {mb(row['rss_peak'])} MB"
                  f" | {mb(row['rss_peak'] - idle)} MB |")

        for i, row in enumerate(rows):
            line(str(i + 1), row)
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        line("median", med)
        peak = max(row["rss_peak"] for row in rows)
        print(json.dumps({"ratio_median_upload_over_median_cp": round(med["upload"] / med["cp"], 2),
                          "rss_idle_mb": mb(idle), "rss_peak_mb": mb(peak),
                          "rss_peak_minus_idle_mb": mb(peak - idle),
                          "mb_per_s_upload": mb(total / med["upload"]), "mb_per_s_cp": mb(total / med["cp"])},
                         indent=1))
    finally:
        cleanup(sw, cluster_env)
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
