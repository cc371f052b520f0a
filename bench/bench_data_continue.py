"""Benchmark: what a continue costs in disk space and time (issue 11, "continue").

    .venv/bin/python bench/bench_data_continue.py --dir DIR [--mib 512] [--files 4]

In ``DIR`` (the filesystem to measure: put Slipway's data directory there) it writes a kept
output of ``--files`` files of random bytes (``--mib`` MiB in all), then makes a continued job's
/output from it exactly as Slipway does (``portal.data.outputs_fs.make_output``: ``cp -a
--reflink=auto`` into the staging dir, then renamed into the job dir), and reports the time and
the filesystem's used bytes before and after (``statvfs``). On a filesystem with reflinks
(XFS with reflink=1, btrfs) the copy shares the blocks: the used space barely grows; on ext4
it is a full copy. Then it rewrites one file of the copy (what a training job does to its
checkpoint) and reports the space again: only the rewritten blocks are new.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from portal.data.outputs_fs import make_output  # noqa: E402
from portal.data.store import DataStore  # noqa: E402


def used(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fstype(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, typ, *_ = line.split()
            if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, typ
    return kind


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--files", type=int, default=4)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="slipway-continue-", dir=a.dir))
    try:
        store = DataStore(root / "datastore", chown=False)
        store.ensure_layout()
        kept = root / "kept"
        kept.mkdir()
        per = a.mib * 2**20 // a.files
        for i in range(a.files):
            with open(kept / f"ckpt-{i}.bin", "wb") as f:
                for _ in range(per // 2**20):
                    f.write(os.urandom(2**20))
        jobdir = root / "job"
        jobdir.mkdir()
        before = used(root)
        t0 = time.perf_counter()
        make_output(store, jobdir / "output", os.getuid(), os.getgid(), kept, False)
        took = time.perf_counter() - t0
        after = used(root)
        with open(jobdir / "output" / "ckpt-0.bin", "r+b") as f:   # a job rewrites a checkpoint
            f.write(os.urandom(per))
        rewritten = used(root)
        print(f"filesystem {fstype(a.dir)} at {a.dir}: kept output {a.mib} MiB in {a.files} files")
        print(f"  continue (make_output): {took:.2f} s, used space +{(after - before) / 2**20:.1f} MiB")
        print(f"  after rewriting one file ({per / 2**20:.0f} MiB): +{(rewritten - before) / 2**20:.1f} MiB"
              " over the kept output")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
