"""``slipway data …``, ``job output/continue``, ``team storage`` and ``project set --input``:
local mode (the service layer in-process) and remote mode (the API over HTTP)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from portal.cli import Ctx, data_push, main
from portal.db import DataUpload, DataVersion, Job
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world

FILES = {"train/a.bin": os.urandom(5000), "train/b.txt": b"hello data\n",
         "labels.csv": b"id,label\n1,cat\n", "same.txt": b"hello data\n"}


def write_tree(root, files):
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def tar_files(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def make_run(svc, ids, base=None):
    runner = CliRunner()

    def run(*args, ok=True, actor=None, who=None, input=None):
        argv = (["--as", actor] if actor else []) + (["--url", base] if who else []) + list(args)
        env = {"SLIPWAY_URL": None, "SLIPWAY_USER": None,
               "SLIPWAY_TOKEN": ids[f"{who}_token"] if who else None}
        r = runner.invoke(main, argv, obj=Ctx(services=svc), env=env, input=input, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, (argv, r.exit_code, r.output)
        return r.output

    return run


@pytest.fixture
def cli(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    yield make_run(svc, ids), svc, ids, tmp_path
    svc.db.dispose()


def versions(svc) -> list[int]:
    with svc.db.session() as s:
        return sorted(s.scalars(select(DataVersion.number)))


def test_local_create_push_show_download(cli, monkeypatch):
    run, svc, _ids, tmp = cli
    monkeypatch.setattr(data_push, "CHUNK_BYTES", 1500)   # several PUTs per object
    src = write_tree(tmp / "src", FILES)
    assert "dataset nlp/cifar created" in run("data", "create", "nlp/cifar", "--kind", "dataset",
                                              "--description", "tiny", actor="carol")
    assert "is not allowed" in run("data", "create", "nlp/Bad!", "--kind", "model", actor="carol", ok=False)
    out = run("data", "push", "nlp/cifar", str(src), actor="carol")
    assert out.startswith("nlp/cifar:1: 4 file(s)"), out
    shown = run("data", "show", "nlp/cifar", actor="alice")
    assert "dataset nlp/cifar: tiny" in shown and "carol" in shown and "upload" in shown
    v = json.loads(run("data", "show", "nlp/cifar:1", "--json", actor="alice"))
    assert {f["path"]: f["sha256"] for f in v["files"]} == {p: hashlib.sha256(b).hexdigest()
                                                              for p, b in FILES.items()}
    assert [r["ref"] for r in json.loads(run("data", "list", "--json", actor="bob"))] == ["nlp/cifar"]
    assert "nlp/cifar" in run("data", "list", actor="bob")
    # the archive and single files, byte-identical
    run("data", "download", "nlp/cifar:1", str(tmp / "v1.tar"), actor="alice")
    assert tar_files((tmp / "v1.tar").read_bytes()) == FILES
    run("data", "download", "nlp/cifar", str(tmp / "a.bin"), "--file", "train/a.bin", actor="alice")
    assert (tmp / "a.bin").read_bytes() == FILES["train/a.bin"]
    (tmp / "into").mkdir()
    run("data", "download", "nlp/cifar:latest", str(tmp / "into"), actor="alice")
    assert tar_files((tmp / "into" / "nlp-cifar-1.tar").read_bytes()) == FILES
    assert not list(tmp.glob("**/*.part"))
    # a single file is a version of one file; the same content again: nothing sent
    out = run("data", "push", "nlp/cifar", str(src / "labels.csv"), actor="carol")
    assert out.startswith("nlp/cifar:2: 1 file(s)") and "0 B sent" in out
    assert "carol" in run("data", "show", "nlp/cifar", actor="carol")
    # refusals come from the service, exit 1
    assert "there is no data repository nlp/cifar" in run("data", "show", "nlp/cifar", actor="mallory", ok=False)
    assert "there is no data repository nlp/cifar" in run("data", "download", "nlp/cifar", str(tmp / "x"),
                                                          actor="mallory", ok=False)
    assert "not a version number" in run("data", "show", "nlp/cifar:two", actor="carol", ok=False)
    assert "must be relative" in run("data", "download", "nlp/cifar", "--file", "../etc/passwd",
                                     actor="carol", ok=False)
    assert versions(svc) == [1, 2]


def test_push_refuses_symlinks_and_empty_folders(cli):
    run, svc, _ids, tmp = cli
    run("data", "create", "nlp/m", "--kind", "model", actor="alice")
    src = write_tree(tmp / "src", {"w.bin": b"w"})
    (src / "link").symlink_to(src / "w.bin")
    out = run("data", "push", "nlp/m", str(src), actor="alice", ok=False)
    assert "link (a symbolic link)" in out
    (tmp / "empty").mkdir()
    assert "nothing to upload" in run("data", "push", "nlp/m", str(tmp / "empty"), actor="alice", ok=False)
    assert "cannot read" in run("data", "push", "nlp/m", str(tmp / "missing"), actor="alice", ok=False)
    with svc.db.session() as s:
        assert s.scalar(select(DataUpload.id)) is None
    assert versions(svc) == []


def test_push_resumes_where_it_stopped(cli, monkeypatch):
    from portal.data import uploads
    from tests.unit.test_data_api import manifest

    run, svc, ids, tmp = cli
    run("data", "create", "nlp/cifar", "--kind", "dataset", actor="alice")
    src = write_tree(tmp / "src", FILES)
    me = _actor(svc, "alice")
    up = uploads.start_upload(svc, me, "nlp", "cifar", manifest(FILES))   # an earlier, cut-off push
    big = FILES["train/a.bin"]
    uploads.receive_chunk(svc, me, up["upload"], hashlib.sha256(big).hexdigest(), 0, io.BytesIO(big[:3000]), 3000)
    sent = []
    real = data_push._send_object
    monkeypatch.setattr(data_push, "_send_object",
                        lambda src_, u, sha, local, off, adv: (sent.append((u, sha, off)), real(src_, u, sha, local, off, adv)))
    out = run("data", "push", "nlp/cifar", str(src), actor="alice")
    assert out.startswith("nlp/cifar:1: 4 file(s)")
    assert (up["upload"], hashlib.sha256(big).hexdigest(), 3000) in sent
    run("data", "download", "nlp/cifar", str(tmp / "v.tar"), actor="alice")
    assert tar_files((tmp / "v.tar").read_bytes()) == FILES


def _actor(svc, name):
    from portal.db import User
    from portal.teams.access import Actor

    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        return Actor(id=u.id, name=u.name, is_cluster_admin=u.is_cluster_admin)


def test_share_public_delete_and_storage(cli):
    run, svc, _ids, tmp = cli
    run("data", "create", "nlp/cifar", "--kind", "dataset", actor="alice")
    run("data", "push", "nlp/cifar", str(write_tree(tmp / "src", FILES)), actor="alice")
    run("data", "push", "nlp/cifar", str(tmp / "src" / "labels.csv"), actor="alice")
    assert "needs" in run("data", "share", "nlp/cifar", "vision", actor="carol", ok=False)
    assert "shared with team vision" in run("data", "share", "nlp/cifar", "vision", actor="bob")
    assert "nlp/cifar" in run("data", "list", actor="mallory")
    assert "no longer shared" in run("data", "unshare", "nlp/cifar", "vision", actor="bob")
    assert "there is no data repository" in run("data", "show", "nlp/cifar", actor="mallory", ok=False)
    assert "--on" in run("data", "public", "nlp/cifar", actor="dave", ok=False)
    assert "cluster administrators" in run("data", "public", "nlp/cifar", "--on", actor="alice", ok=False)
    assert "is public" in run("data", "public", "nlp/cifar", "--on", actor="dave")
    assert "nlp/cifar" in run("data", "list", actor="erin")
    # delete: typed confirmation, or --yes
    assert "nothing was deleted" in run("data", "delete", "nlp/cifar:2", actor="bob", input="3\n", ok=False)
    assert "deleted nlp/cifar:2" in run("data", "delete", "nlp/cifar:2", actor="bob", input="2\n")
    assert versions(svc) == [1]
    assert "'latest'" in run("data", "delete", "nlp/cifar:latest", "--yes", actor="bob", ok=False)
    assert "nothing was deleted" in run("data", "delete", "nlp/cifar", actor="bob", input="nope\n", ok=False)
    # team storage and its quota
    shown = json.loads(run("team", "storage", "nlp", "--json", actor="carol"))
    assert shown["team"] == "nlp" and shown["used_bytes"] > 0 and shown["quota_bytes"] is None
    assert shown["items"][0]["what"] == "nlp/cifar:1"
    assert "only cluster administrators" in run("team", "storage", "nlp", "--quota", "1GB", actor="alice", ok=False)
    assert "cannot read size" in run("team", "storage", "nlp", "--quota", "lots", actor="dave", ok=False)
    out = run("team", "storage", "nlp", "--quota", "100GB", actor="dave")
    assert "quota: 100.00 GB" in out and "nlp/cifar:1" in out
    assert "no quota" in run("team", "storage", "nlp", "--quota", "none", actor="dave")
    assert "deleted nlp/cifar" in run("data", "delete", "nlp/cifar", "--yes", actor="bob")
    assert versions(svc) == []


def test_job_output_and_continue_local(cli):
    from tests.support.fakes import commit_to_bare, git
    from tests.unit.test_data_api import kept_output

    run, svc, ids, tmp = cli
    jid = ids["succeeded"]
    out = {"model.pt": b"weights" * 50, "logs/m.json": b"{}"}
    kept_output(svc, jid, out)
    listing = run("job", "output", str(jid), actor="carol")
    assert "kept, 2 file(s)" in listing and "logs/m.json" in listing
    assert json.loads(run("job", "output", str(jid), "--json", actor="carol"))["file_count"] == 2
    run("job", "output", str(jid), "--download", str(tmp / "dl"), actor="carol")
    assert (tmp / "dl" / "model.pt").read_bytes() == out["model.pt"]
    assert (tmp / "dl" / "logs" / "m.json").read_bytes() == b"{}"
    assert "exists already" in run("job", "output", str(jid), "--download", str(tmp / "dl"), actor="carol", ok=False)
    run("job", "output", str(jid), "--archive", str(tmp / "o.tar"), actor="carol")
    assert tar_files((tmp / "o.tar").read_bytes()) == out
    assert "there is no job" in run("job", "output", str(jid), actor="mallory", ok=False) \
        or "not" in run("job", "output", str(jid), actor="mallory", ok=False)
    run("data", "create", "nlp/w", "--kind", "model", actor="carol")
    assert "nlp/w:1: 2 file(s)" in run("data", "from-job", str(jid), "nlp/w", actor="carol")
    # continue: a new job at its commit whose /output starts as a copy
    bare = svc.config.repos_root / "nlp" / "proj.git"
    commit = commit_to_bare(bare, tmp / "w", {"slipway-entrypoint.sh": "echo hi\n"}, branch="exp-0")
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-0", commit)
    with svc.db.transaction() as s:
        s.get(Job, jid).commit_sha = commit
    msg = run("job", "continue", str(jid), actor="carol")
    with svc.db.session() as s:
        new = s.scalar(select(Job).where(Job.continue_from == jid))
        assert new is not None and str(new.id) in msg
    assert "irreversible" in run("job", "output", str(jid), "--delete", actor="bob", ok=False)
    assert "one of" in run("job", "output", str(jid), "--delete", "--archive", "x", actor="bob", ok=False)


def test_project_set_inputs(cli):
    from tests.unit.test_data_api import kept_output

    run, svc, ids, tmp = cli
    run("data", "create", "nlp/cifar", "--kind", "dataset", actor="carol")
    run("data", "push", "nlp/cifar", str(write_tree(tmp / "src", FILES)), actor="carol")
    jid = ids["succeeded"]
    kept_output(svc, jid, {"w.bin": b"w"})
    run("job", "output", str(jid), actor="carol")    # kept now
    assert "there is no data repository vision/cifar-100" in run(
        "project", "set", "nlp/proj", "--input", "input0=vision/cifar-100:latest", actor="carol", ok=False)
    out = run("project", "set", "nlp/proj", "--input", "input0=nlp/cifar:latest",
              "--input", f"input2=job:{jid}", actor="carol")
    assert f"inputs: input0=nlp/cifar:latest, input2=job:{jid}" in out
    p = json.loads(run("project", "show", "nlp/proj", "--json", actor="carol"))
    assert p["inputs"] == {"input0": "nlp/cifar:latest", "input2": f"job:{jid}"}
    out = run("project", "set", "nlp/proj", "--input", "input0=", "--time", "2h", actor="carol")
    assert f"120 min; compute type: none; inputs: input2=job:{jid}" in out
    assert "input7" in run("project", "set", "nlp/proj", "--input", "input7=a/b", actor="carol", ok=False)
    assert "SLOT=REF" in run("project", "set", "nlp/proj", "--input", "nonsense", actor="carol", ok=False)
    assert "nothing to change" in run("project", "set", "nlp/proj", actor="carol", ok=False)
    assert "input2" in run("project", "show", "nlp/proj", actor="carol")


# ------------------------------------------------------------------ remote mode (/api/)

@pytest.fixture
def site(tmp_path):
    from portal.app import create_app
    from tests.support.git_server import serve

    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    with serve(create_app(svc)) as base:
        yield make_run(svc, ids, base), svc, ids, tmp_path
    svc.db.dispose()


def test_remote_push_download_and_same_output_as_local(site, monkeypatch):
    run, svc, ids, tmp = site
    monkeypatch.setattr(data_push, "CHUNK_BYTES", 2048)   # several streamed PUTs per object
    src = write_tree(tmp / "src", FILES)
    run("data", "create", "nlp/cifar", "--kind", "dataset", who="carol")
    assert run("data", "push", "nlp/cifar", str(src), who="carol").startswith("nlp/cifar:1: 4 file(s)")
    run("data", "download", "nlp/cifar:1", str(tmp / "r.tar"), who="alice")
    assert tar_files((tmp / "r.tar").read_bytes()) == FILES
    run("data", "download", "nlp/cifar", str(tmp / "r.bin"), "--file", "train/a.bin", who="alice")
    assert (tmp / "r.bin").read_bytes() == FILES["train/a.bin"]
    for args in (("data", "list"), ("data", "show", "nlp/cifar"), ("data", "show", "nlp/cifar:1", "--json")):
        assert run(*args, who="alice") == run(*args, actor="alice"), args
    assert "there is no data repository nlp/cifar" in run("data", "show", "nlp/cifar", who="mallory", ok=False)
    assert "shared with team vision" in run("data", "share", "nlp/cifar", "vision", who="alice")
    assert "nlp/cifar" in run("data", "list", who="mallory")
    # storage and project inputs through the API
    assert "only cluster administrators" in run("team", "storage", "nlp", "--quota", "1kB", who="alice", ok=False)
    assert "quota: 1.00 kB" in run("team", "storage", "nlp", "--quota", "1kB", who="dave")
    big = write_tree(tmp / "big", {"x.bin": os.urandom(4000)})
    assert "quota" in run("data", "push", "nlp/cifar", str(big), who="carol", ok=False)
    assert versions(svc) == [1]
    out = run("project", "set", "nlp/proj", "--input", "input1=nlp/cifar:1", who="carol")
    assert "inputs: input1=nlp/cifar:1" in out
    remote = json.loads(run("project", "show", "nlp/proj", "--json", who="carol"))
    assert remote == json.loads(run("project", "show", "nlp/proj", "--json", actor="carol"))
    assert remote["inputs"] == {"input1": "nlp/cifar:1"}
