"""``slipway data push TEAM/NAME PATH``: a new version from a file or a folder — resumable.

1. walk PATH (regular files only: a symlink, FIFO, socket or device is refused, never followed);
2. sha256 of each file (streamed, 1 MiB reads);
3. ``start_upload`` with the manifest: the server answers which objects it still lacks and from
   which offset (the same user, repository and manifest continue the same open upload);
4. each missing object from its offset, in PUTs of at most 16 MiB streamed from the file;
5. ``commit``: the new version.
An interrupted push continues where it stopped when run again."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, \
    TransferSpeedColumn

from .context import Ctx, pass_ctx
from .data_common import nbytes, print_sorted_json, repo_ref
from .local import source
from .output import console, fail

CHUNK_BYTES = 16 * 1024 * 1024   # one PUT request (kept in the server's memory: serve.py)
READ_BYTES = 1024 * 1024         # one read from a file


class FileSlice:
    """``length`` bytes of an open file from its current position, read on demand: a request
    body of known length (requests sends a Content-Length, never the whole slice in memory)."""

    def __init__(self, fh, length: int, advance=None):
        self.fh, self.left, self.length, self.advance = fh, length, length, advance

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.fh.read(self.left if size is None or size < 0 else min(size, self.left))
        if not data:
            raise OSError(f"{getattr(self.fh, 'name', 'the file')} became shorter while uploading")
        self.left -= len(data)
        if self.advance is not None:
            self.advance(len(data))
        return data

    def __iter__(self):
        while chunk := self.read(READ_BYTES):
            yield chunk


def walk(root: Path) -> list[tuple[str, Path, int]]:
    """[(path in the version, file on disk, size)] of the regular files under ``root`` (or
    ``root`` itself), sorted; anything else is refused with the reason."""
    try:
        st = root.lstat()
    except OSError as exc:
        fail(f"cannot read {root}: {exc.strerror or exc}")
    if stat.S_ISLNK(st.st_mode):
        fail(f"{root} is a symbolic link; name the file or folder it points to")
    if stat.S_ISREG(st.st_mode):
        return [(root.name, root, st.st_size)]
    if not stat.S_ISDIR(st.st_mode):
        fail(f"{root} is not a regular file or a folder")
    found: list[tuple[str, Path, int]] = []
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False,
                                                onerror=lambda e: fail(f"cannot read {e.filename}: {e.strerror}")):
        for entry in sorted(dirnames + filenames):
            p = Path(dirpath) / entry
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                refused.append(f"{rel} (a symbolic link)")
            elif stat.S_ISREG(st.st_mode):
                found.append((rel, p, st.st_size))
            elif not stat.S_ISDIR(st.st_mode):
                refused.append(f"{rel} (not a regular file)")
    if refused:
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        fail("only regular files are uploaded; remove or replace: " + ", ".join(refused[:5]) + more)
    if not found:
        fail(f"{root} holds no files; nothing to upload")
    return sorted(found)


def sha256_of(path: Path, advance) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_BYTES):
            h.update(chunk)
            advance(len(chunk))
    return h.hexdigest()


def progress_bar(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                    disable=quiet or not console.is_terminal, transient=True)


@click.command("push")
@click.argument("ref", metavar="TEAM/NAME")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the new version as JSON")
@pass_ctx
def data_push(ctx: Ctx, ref, path, quiet, as_json):
    """Upload PATH (a file or a folder) as the next version of TEAM/NAME. Run it again after an
    interruption: what arrived already is not sent again."""
    team, name = repo_ref(ref)
    files = walk(path)
    src = source(ctx)
    total = sum(size for _rel, _p, size in files)
    by_sha: dict[str, tuple[Path, int]] = {}
    manifest = []
    with progress_bar(quiet) as bar:
        hashing = bar.add_task("hashing", total=total)
        for rel, p, size in files:
            try:
                sha = sha256_of(p, lambda n: bar.advance(hashing, n))
            except OSError as exc:
                fail(f"cannot read {p}: {exc.strerror or exc}")
            manifest.append({"path": rel, "size": size, "sha256": sha})
            by_sha.setdefault(sha, (p, size))
        bar.remove_task(hashing)
        up = src.upload_start(team, name, manifest, "upload")   # the version's source
        missing = {sha: int(off) for sha, off in (up.get("missing") or {}).items()}
        distinct = sum(size for _p, size in by_sha.values())
        left = sum(by_sha[sha][1] - off for sha, off in missing.items() if sha in by_sha)
        sending = bar.add_task("uploading", total=distinct, completed=distinct - left)
        for sha, offset in sorted(missing.items()):
            if sha not in by_sha:
                fail(f"the server asks for an object ({sha[:12]}…) that is not in {path}")
            _send_object(src, up["upload"], sha, by_sha[sha], offset,
                         lambda n: bar.advance(sending, n))
        version = src.upload_commit(up["upload"])
    if as_json:
        print_sorted_json(version)
        return
    sent = f", {nbytes(left)} sent" if left != total else ""
    click.echo(f"{version['ref']}: {version['file_count']} file(s), {nbytes(version['size_bytes'])}{sent}")


def _send_object(src, upload_id: str, sha: str, local: tuple[Path, int], offset: int, advance) -> None:
    """Object ``sha`` from ``offset`` to its end, ``CHUNK_BYTES`` per request."""
    path, size = local
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            while offset < size:
                n = min(CHUNK_BYTES, size - offset)
                answer = src.upload_chunk(upload_id, sha, offset, FileSlice(fh, n, advance), n)
                new_offset = int(answer.get("offset", offset + n))
                if new_offset != offset + n:   # the server kept less (or more): go on from its offset
                    fh.seek(new_offset)
                offset = new_offset
                if answer.get("complete"):
                    return
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}; run the same push again to continue")
