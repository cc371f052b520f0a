"""container_images/build end to end for the fast busybox image (no root or network needed)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BUILD = Path(__file__).resolve().parents[2] / "container_images" / "build"


def build(dest: Path, *args: str) -> tuple[list[dict], str]:
    proc = subprocess.run([sys.executable, str(BUILD), "--dest", str(dest), "--json", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_busybox_build_is_idempotent_and_complete(tmp_path):
    dest = tmp_path / "images"
    [first], err = build(dest, "busybox")
    assert first["built"] is True and "busybox: built in" in err
    root = Path(first["path"])
    assert root == dest / "busybox"
    for p in ("bin/sh", "bin/busybox", "usr/bin/env", "etc/passwd", "etc/group", "etc/os-release",
              "work", "output", "input0", "input4", "mnt/9", "dev", "proc", "sys", "tmp"):
        assert (root / p).exists(), p
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"
    stamp = json.loads((dest / "busybox.stamp.json").read_text())
    assert stamp["recipe_hash"] == first["recipe_hash"]
    assert json.loads((root / "etc" / "slipway-image").read_text()) == {
        "name": "busybox", "recipe": first["recipe_hash"]}

    [again], err = build(dest, "busybox")
    assert again["built"] is False and "up to date" in err   # nothing rebuilt

    # An incomplete image (sentinel gone) is rebuilt; --force always rebuilds.
    os.unlink(root / "bin" / "sh")
    [rebuilt], _ = build(dest, "busybox")
    assert rebuilt["built"] is True and (root / "bin" / "sh").exists()
    (root / "tmp" / "old-tree").write_text("x")   # gone once --force builds the tree anew
    [forced], _ = build(dest, "busybox", "--force", "--squashfs")
    assert forced["built"] is True
    # a new tree, not the old one touched up (an inode number can be reused: a marker cannot)
    assert not (root / "tmp" / "old-tree").exists()
    sqfs = Path(forced["squashfs"])
    assert sqfs.read_bytes()[:4] == b"hsqs"  # SquashFS magic
    [same], _ = build(dest, "busybox", "--squashfs")
    assert same["built"] is False and same["squashfs"] == str(sqfs) and "squashfs_seconds" not in same
    leftovers = [p.name for p in dest.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert leftovers == []
