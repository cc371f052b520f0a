"""Issue 9 item 6, "copy-paste runs code": every command Slipway shows (job and project pages) or
prints (CLI, push replies) is quoted for a POSIX shell, so what a user copies is exactly the
intended argv — checked by running the shown text through ``shlex.split``."""
from __future__ import annotations

import html
import re
import shlex
import subprocess

import pytest
from click.testing import CliRunner
from rich.console import Console

from portal.cli import output as cli_mod
from portal import shellquote
from portal.app import create_app
from portal.cli import Ctx, main
from portal.jobs import push
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed
from tests.support.web import add_job, login, make_world

HOSTILE = ["x;id", "feat/$(touch pwned)", "a'b", "-n", "b`id`", 'q"uo te', "$HOME", "a&&b|c>d", "--upload-pack=x"]


def words(cmd: str, cwd) -> list[str]:
    """The argv a POSIX shell makes of ``cmd`` (run by /bin/sh in ``cwd``: an unquoted ``;``,
    ``$(…)``, backtick or ``$VAR`` would run or expand there and change the words)."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    parsed = list(lex)
    r = subprocess.run(["/bin/sh", "-c", f"printf '%s\\0' {cmd}"], cwd=cwd, capture_output=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, timeout=10)
    ran = r.stdout.decode().split("\0")[:-1]
    assert parsed == ran and r.returncode == 0 and not r.stderr, (cmd, parsed, ran, r.stderr)
    assert list(cwd.iterdir()) == [], "the command created files"
    return ran


def pull_argv(branch: str) -> list[str]:
    """What the page means: pull this branch (a leading '-' as its full ref, never an option)."""
    return ["git", "pull", "slipway", f"refs/heads/{branch}" if branch.startswith("-") else branch]


@pytest.fixture
def shdir(tmp_path):
    d = tmp_path / "sh"
    d.mkdir()
    return d


@pytest.mark.parametrize("word", HOSTILE + ["exp-1", "", "日本", "new\nline"])
def test_quote_and_command_round_trip(word, shdir):
    assert words(shellquote.quote(word), shdir) == [word]
    argv = ["git", "pull", "slipway", word]
    assert words(shellquote.command(argv), shdir) == argv
    assert shellquote.shell(argv) == shellquote.command(argv) and shellquote.shell(word) == shellquote.quote(word)


def test_plain_words_stay_readable():
    assert shellquote.command(["git", "pull", "slipway", "exp-1"]) == "git pull slipway exp-1"
    assert shellquote.quote("http://h:8000/git/nlp/proj.git") == "http://h:8000/git/nlp/proj.git"
    assert shellquote.branch_arg("-n") == "refs/heads/-n" and shellquote.branch_arg("exp-1") == "exp-1"


# ------------------------------------------------------------------------------- web pages

@pytest.fixture
def web(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    app = create_app(svc)
    c = app.test_client()
    assert login(c, "alice").status_code == 302
    yield svc, ids, c
    svc.db.dispose()


def shown(page: str, pattern: str) -> str:
    """The text a browser shows for the element matched (entities decoded, as copied)."""
    m = re.search(pattern, page, re.S)
    assert m, pattern
    return html.unescape(m.group(1))


@pytest.mark.parametrize("branch", HOSTILE)
def test_job_page_pull_command_is_quoted(web, branch, shdir):
    svc, ids, c = web
    jid = add_job(svc, ids["proj"], branch=branch, state="succeeded", pusher="alice", exit_code=0,
                  branch_updated=True, ended_at=svc.now())
    page = c.get(f"/jobs/{jid}").get_data(as_text=True)
    cmd = shown(page, r'<code id="pull-command">(.*?)</code>')
    assert words(cmd, shdir) == pull_argv(branch), cmd
    # nothing else on the page holds the command unquoted
    assert f"git pull slipway {branch}" not in html.unescape(page) or shlex.quote(branch) == branch


def test_project_page_commands_are_quoted(web, shdir):
    svc, ids, c = web
    remote = svc.config.repo_url("nlp", "proj")
    page = c.get("/projects/nlp/proj").get_data(as_text=True)
    block = shown(page, r'<pre class="cmds" id="push-commands">(.*?)</pre>')
    copied = shown(page, r'<pre class="cmds" id="push-commands">.*?</pre><button[^>]*data-copy="([^"]*)"')
    assert block == copied
    lines = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
    assert words(lines[0], shdir) == ["git", "remote", "add", "slipway", remote]
    assert words(lines[-1], shdir) == ["git", "push", "slipway", "exp-1"]


def test_project_page_quotes_a_remote_url_with_metacharacters(web, shdir):
    """Names are plain (a-z 0-9 . _ -), but the public base URL comes from the configuration."""
    svc, _ids, c = web
    svc.config.base_url = "http://slipway.example:8000/a b;$(id)"
    remote = svc.config.repo_url("nlp", "proj")
    page = c.get("/projects/nlp/proj").get_data(as_text=True)
    block = shown(page, r'<pre class="cmds" id="push-commands">(.*?)</pre>')
    assert words(block.splitlines()[0], shdir) == ["git", "remote", "add", "slipway", remote]


# -------------------------------------------------------------------------------------- CLI

@pytest.fixture
def cli(tmp_path, monkeypatch):
    svc = make_services(tmp_path, backend=FakeBackend())
    make_world(svc)
    runner = CliRunner()

    def run(*args, ok=True, actor=None, env=None):
        argv = (["--as", actor] if actor else []) + list(args)
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=env, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.output)
        return r.output

    yield run, svc, monkeypatch
    svc.db.dispose()


def test_cli_project_create_prints_whole_quoted_commands_at_any_width(cli, shdir):
    run, svc, monkeypatch = cli
    monkeypatch.setattr(cli_mod, "console", Console(highlight=False, width=20))
    out = run("project", "create", "nlp", "exp", "--gpus", "a4000:1", env={"COLUMNS": "20"})
    remote = svc.config.repo_url("nlp", "exp")
    lines = [ln.strip() for ln in out.splitlines()]
    add = next(ln for ln in lines if ln.startswith("git remote add"))
    assert words(add, shdir) == ["git", "remote", "add", "slipway", remote]
    push = next(ln for ln in lines if ln.startswith("git checkout"))
    assert push.endswith("git push slipway exp-1"), out  # one line: the branch is not cut off
    assert f"remote: {remote}" in lines


def test_cli_project_create_quotes_a_strange_remote(cli, shdir):
    run, svc, _ = cli
    svc.config.base_url = "http://h:8000/x y'z"
    out = run("project", "create", "nlp", "exp")
    add = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("git remote add"))
    assert words(add, shdir) == ["git", "remote", "add", "slipway", svc.config.repo_url("nlp", "exp")]


def test_cli_hint_for_an_unknown_user_is_quoted(cli, shdir):
    run, _svc, _ = cli
    out = run("token", "create", "o'brien;id", ok=False)
    cmd = out.split("create it with: ", 1)[1].strip()
    assert words(cmd, shdir) == ["slipway", "user", "add", "o'brien;id"]


# ------------------------------------------------------------------------------ push replies

EP = {"slipway-entrypoint.sh": "echo hi\n"}
Z = "0" * 40


@pytest.fixture
def hooks(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    seed(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    yield svc, bare, tmp_path / "work"
    svc.db.dispose()


def test_push_reply_add_member_hint_is_quoted(hooks, shdir):
    svc, bare, work = hooks
    from portal.db import User

    name = "o'brien;touch pwned"
    with svc.db.transaction() as s:
        s.add(User(name=name, unix_user="ob", created_at=svc.now()))
    sha = commit_to_bare(bare, work, EP)
    r = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", name,
                                                    [("refs/heads/exp-1", Z, sha)], None))
    assert not r.ok
    cmd = r.messages[0].split("ask a team administrator: ", 1)[1]
    assert words(cmd, shdir) == ["slipway", "team", "add-member", "nlp", name]


def test_push_reply_busy_branch_names_a_runnable_cancel(hooks, shdir):
    svc, bare, work = hooks
    sha = commit_to_bare(bare, work, EP)
    pre = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice",
                                                      [("refs/heads/x;id", Z, sha)], None))
    assert pre.ok, pre.messages
    again = push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice",
                                                        [("refs/heads/x;id", Z, sha)], None))
    assert not again.ok
    msg = next(m for m in again.messages if "already has job" in m)
    cmd = msg.rsplit("cancel it: ", 1)[1]
    assert words(cmd, shdir)[:3] == ["slipway", "job", "cancel"] and words(cmd, shdir)[3].isdigit()
