"""The native pre-receive hook's build (git_gateway/hook_native.py): compiled into the gateway's
hooks directory where a C compiler exists, rebuilt when its source or compiler changes, and the
bash hook wherever it cannot be built. What the hook says is tested in test_hook_script.py."""
from __future__ import annotations

import os
import stat
import sys

import pytest

from git_gateway import hook_native, hooks, post_receive

ELF = b"\x7fELF"

needs_cc = pytest.mark.skipif(hook_native.compiler() is None, reason="no C compiler here")


@needs_cc
def test_the_gateway_hooks_dir_gets_the_native_pre_receive_and_rebuilds_it_when_stale(tmp_path):
    d = post_receive.pre_receive_only(tmp_path / "gw")
    pre = d / "pre-receive"
    assert pre.read_bytes().startswith(ELF) and not (d / "post-receive").exists()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert hooks.current(d, python=sys.executable, only=("pre-receive",), native=True)
    built = pre.stat().st_mtime_ns
    post_receive.pre_receive_only(d)                 # current: not built again
    assert pre.stat().st_mtime_ns == built
    stamp = pre.with_name("pre-receive" + hook_native.STAMP_SUFFIX)
    stamp.write_text("0" * 64 + " /usr/bin/cc\n")    # as an older source left it
    assert not hooks.current(d, python=sys.executable, only=("pre-receive",), native=True)
    post_receive.pre_receive_only(d)
    assert stamp.read_text() == hook_native.stamp(hook_native.compiler())


def test_without_a_compiler_the_hooks_are_bash(tmp_path, monkeypatch):
    monkeypatch.setattr(hook_native, "compiler", lambda: None)
    d = post_receive.pre_receive_only(tmp_path / "gw")
    text = (d / "pre-receive").read_text()
    assert text.startswith("#!") and "bash" in text.splitlines()[0] and hooks.MARKER in text
    assert hooks.current(d, python=sys.executable, only=("pre-receive",), native=True)


@needs_cc
def test_a_build_that_fails_leaves_the_bash_hooks_and_says_why(tmp_path, monkeypatch, caplog):
    bad = tmp_path / "broken.c"
    bad.write_text("int main( {\n")
    monkeypatch.setattr(hook_native, "SOURCE", bad)
    written = hooks.install(tmp_path / "h", python=sys.executable, native=True)
    for hook in written:
        assert hook.read_text().startswith("#!") and hooks.MARKER in hook.read_text()
        assert not hook.with_name(hook.name + hook_native.STAMP_SUFFIX).exists()
    assert "native git hook not built" in caplog.text
    assert not [p for p in (tmp_path / "h").iterdir() if ".build-" in p.name]


@needs_cc
def test_a_bash_install_replaces_native_hooks_whole(tmp_path):
    d = tmp_path / "h"
    hooks.install(d, python=sys.executable, native=True)
    assert (d / "pre-receive").read_bytes().startswith(ELF)
    hooks.install(d, python=sys.executable)
    assert not (d / "pre-receive").read_bytes().startswith(ELF)
    assert not (d / ("pre-receive" + hook_native.STAMP_SUFFIX)).exists()
    assert hooks.current(d, python=sys.executable)


@needs_cc
def test_builds_come_from_the_users_cache_and_an_unsafe_cache_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hooks.install(tmp_path / "a", python=sys.executable, native=True)
    root = hook_native.cache_root()
    [binary] = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    compiles = []
    real = hook_native._compile
    monkeypatch.setattr(hook_native, "_compile", lambda cc, out: compiles.append(out) or real(cc, out))
    hooks.install(tmp_path / "b", python=sys.executable, native=True)
    assert compiles == [] and (tmp_path / "b" / "pre-receive").read_bytes() == binary.read_bytes()
    os.chmod(binary, 0o777)                  # writable by others: never copied from
    hooks.install(tmp_path / "c", python=sys.executable, native=True)
    assert len(compiles) == 1 and (tmp_path / "c" / "pre-receive").read_bytes().startswith(ELF)
