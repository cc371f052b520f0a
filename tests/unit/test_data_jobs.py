"""The data side of jobs: input bindings at push time (options, project defaults, access),
the job's /output (made, kept, listed, downloaded, deleted), continue, a version from a job's
output, storage samples and quotas -- the service layer over the in-memory Slurm."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import select

from portal.data import outputs, quota, repos, storage, uploads, versions
from portal.db import DataShare, Job, JobInput, LedgerEntry, Membership, Team, User
from portal.jobs import continuing, push, states
from portal.jobs.reconciler.loop import Reconciler
from portal.projects import service as projects
from portal.teams.access import Actor, OpError
from tests.support.fakes import FakeBackend, commit_to_bare, git, hook_payload, make_services, seed

EP = {"slipway-entrypoint.sh": "echo hi\n"}
Z = "0" * 40


@pytest.fixture
def env(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend)
    ids = seed(svc)
    seed_other(svc)
    bare = svc.config.repos_root / "nlp" / "proj.git"
    alice = Actor(ids["user_id"], "alice")
    yield svc, backend, bare, tmp_path / "work", alice
    svc.db.dispose()


def seed_other(svc):
    with svc.db.transaction() as s:
        u = User(name="bob", unix_user="sw-bob", created_at=svc.now())
        t = Team(name="vision", personal=False, created_at=svc.now())
        s.add_all([u, t])
        s.flush()
        s.add(Membership(user_id=u.id, team_id=t.id, role="owner", created_at=svc.now()))


def bob(svc) -> Actor:
    with svc.db.session() as s:
        return Actor(s.scalar(select(User.id).where(User.name == "bob")), "bob")


def make_version(svc, actor, team, name, files: dict[str, bytes], kind="dataset"):
    try:
        repos.create_repo(svc, actor, team, name, kind)
    except OpError as exc:
        assert exc.status == 409
    manifest = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                for p, b in files.items()]
    up = uploads.start_upload(svc, actor, team, name, manifest)
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    for sha, offset in up["missing"].items():
        data = by_sha[sha][offset:]
        uploads.receive_chunk(svc, actor, up["upload"], sha, offset, io.BytesIO(data), len(data))
    return uploads.commit_upload(svc, actor, up["upload"])


def pre(svc, sha, branch="exp-1", options=None, pusher="alice"):
    return push.handle_pre_receive(svc, hook_payload(
        "pre-receive", "nlp/proj", pusher, [(f"refs/heads/{branch}", Z, sha)], options))


def post(svc, sha, branch="exp-1"):
    return push.handle_post_receive(svc, hook_payload(
        "post-receive", "nlp/proj", "alice", [(f"refs/heads/{branch}", Z, sha)]))


def last_job(svc) -> Job:
    with svc.db.session() as s:
        return s.scalars(select(Job).order_by(Job.id.desc())).first()


def spec_of(svc, job_id) -> dict:
    return json.loads((Path(svc.config.jobs_dir) / str(job_id) / "spec.json").read_text())


def end_job(svc, job_id, files: dict[str, bytes]):
    """The job ran and wrote ``files`` into its /output, then ended."""
    out = outputs.live_dir(svc, job_id)
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    with svc.db.transaction() as s:
        job = s.get(Job, job_id)
        job.state_changed_at = job.started_at = svc.now()
        states.transition(job, states.RUNNING, now=svc.now())
        states.transition(job, states.SUCCEEDED, now=svc.now())


def test_a_push_binds_a_version_read_only_and_gets_an_output(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "cifar", {"a.txt": b"one", "d/b.bin": b"two"})
    make_version(svc, alice, "nlp", "cifar", {"a.txt": b"one", "d/b.bin": b"three"})
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha, options=["input0=cifar", "input2=nlp/cifar:1"])
    assert r.ok, r.messages
    job = last_job(svc)
    with svc.db.session() as s:
        labels = {i.slot: i.label for i in s.scalars(select(JobInput).where(JobInput.job_id == job.id))}
    assert labels == {0: "nlp/cifar:2", 2: "nlp/cifar:1"}   # latest resolved at push time
    assert post(svc, sha).ok
    spec = spec_of(svc, job.id)
    v2 = svc.config.data_dir / "datastore" / "repos"
    assert [Path(p).name for p in spec["readonly_paths"]] == ["2", "1"]
    assert all(str(v2) in p for p in spec["readonly_paths"])
    argv = " ".join(spec["container_argv"])
    assert f"--bind={spec['readonly_paths'][0]}:/input0" in argv
    assert f"--bind={spec['readonly_paths'][1]}:/input2" in argv
    assert f"--bind={spec['output_dir']}:/output" in argv
    assert Path(spec["output_dir"]).is_dir() and not any(Path(spec["output_dir"]).iterdir())
    assert (Path(spec["readonly_paths"][0]) / "d" / "b.bin").read_bytes() == b"three"
    assert last_job(svc).output_state == "open"


@pytest.mark.parametrize("option, words", [
    ("input7=nlp/cifar:1", "five inputs"),
    ("input5=cifar", "five inputs"),
    ("input0=nlp/../x", "write TEAM/NAME"),
    ("input0=..", "not allowed"),
    ("input0=cifar;rm", "not allowed"),
    ("input0=cifar:9", "no version 9 (latest: 1)"),
    ("input0=cifar:two", "not a version number"),
    ("input0=nope", "there is no data repository nlp/nope"),
    ("input0=job:999", "there is no job 999"),
    ("continue=abc", "continue=JOB"),
    ("continue=999", "there is no job 999"),
])
def test_bad_bindings_are_refused_and_nothing_is_reserved(env, option, words):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "cifar", {"a.txt": b"one"})
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha, options=[option])
    assert not r.ok and any(words in m for m in r.messages), r.messages
    assert last_job(svc) is None


def test_another_teams_private_data_is_refused_without_a_leak_shared_and_public_work(env):
    svc, backend, bare, work, alice = env
    make_version(svc, bob(svc), "vision", "private", {"x": b"secret"})
    sha = commit_to_bare(bare, work, EP)
    r_private = pre(svc, sha, options=["input0=vision/private:1"])
    r_missing = pre(svc, sha, options=["input0=vision/nothing:1"])
    assert not r_private.ok and not r_missing.ok
    # the same words whether it exists or not
    assert r_private.messages[0].replace("private", "X") == r_missing.messages[0].replace("nothing", "X")
    with pytest.raises(OpError) as e:
        repos.show_repo(svc, alice, "vision", "private")
    assert e.value.status == 404
    repos.share_repo(svc, bob(svc), "vision", "private", "nlp")
    assert pre(svc, sha, options=["input0=vision/private:1"]).ok
    with svc.db.transaction() as s:
        s.query(Job).delete()
        s.query(DataShare).delete()
    assert not pre(svc, sha, options=["input0=vision/private"]).ok
    admin = Actor(0, "root", True)
    repos.set_public(svc, admin, "vision", "private", True)
    assert pre(svc, sha, options=["input0=vision/private"]).ok


def test_project_defaults_apply_and_push_options_override_or_drop_them(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "cifar", {"a.txt": b"one"})
    make_version(svc, alice, "nlp", "imagenet", {"b.txt": b"two"})
    st = projects.push_options.JobSettings("a4000", 1, 60, "python")
    with pytest.raises(OpError, match="no data repository nlp/typo"):
        projects.update_settings(svc, alice, "nlp", "proj", st, inputs={"input0": "typo:1"})
    projects.update_settings(svc, alice, "nlp", "proj", st,
                             inputs={"input0": "cifar:latest", "input1": "imagenet"})
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha, branch="a").ok
    assert pre(svc, sha, branch="b", options=["input1=", "input3=cifar:1"]).ok
    with svc.db.session() as s:
        rows = s.execute(select(Job.branch, JobInput.slot, JobInput.label).join(
            JobInput, JobInput.job_id == Job.id).order_by(Job.branch, JobInput.slot)).all()
    assert [tuple(r) for r in rows] == [("a", 0, "nlp/cifar:1"), ("a", 1, "nlp/imagenet:1"),
                                        ("b", 0, "nlp/cifar:1"), ("b", 3, "nlp/cifar:1")]


def test_output_is_kept_read_only_listed_downloaded_and_continued(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "cifar", {"a.txt": b"one"})
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha, options=["input0=cifar"]).ok and post(svc, sha).ok
    job = last_job(svc)
    files = {"model.pt": b"\x00" * 5000, "logs/train.txt": b"loss 0.1\n", "c.json": b"{}"}
    end_job(svc, job.id, files)
    Reconciler(svc).tick()
    listing = outputs.output_listing(svc, alice, job.id)
    assert listing["state"] == "kept" and listing["file_count"] == 3
    assert {f["path"]: f["size"] for f in listing["files"]} == {k: len(v) for k, v in files.items()}
    assert not outputs.live_dir(svc, job.id).exists()
    path, size, _name = outputs.output_file(svc, alice, job.id, "logs/train.txt")
    assert Path(path).read_bytes() == b"loss 0.1\n" and size == 9
    name, chunks = outputs.output_archive(svc, alice, job.id)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert got == files and name == f"job-{job.id}-output.tar"
    with pytest.raises(OpError) as e:   # bob is not in team nlp: no such job
        outputs.output_listing(svc, bob(svc), job.id)
    assert e.value.status == 404

    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-1", sha)   # the push landed
    new_id, msg = continuing.continue_job(svc, alice, job.id)
    assert f"continues as job {new_id}" in msg
    new = last_job(svc)
    assert (new.id, new.commit_sha, new.branch, new.continue_from) == (new_id, sha, "exp-1", job.id)
    with svc.db.session() as s:
        assert [i.label for i in s.scalars(select(JobInput).where(JobInput.job_id == new_id))] \
            == ["nlp/cifar:1"]
    live = Path(spec_of(svc, new_id)["output_dir"])
    assert (live / "model.pt").read_bytes() == files["model.pt"]
    (live / "model.pt").write_bytes(b"changed")           # the new job writes its copy
    (live / "extra").write_bytes(b"x")
    again = outputs.output_listing(svc, alice, job.id)
    assert again["files"] == listing["files"]               # job 42's output never changes
    kept = outputs.kept_dir(svc, seed_team_id(svc), job.id)
    assert (kept / "model.pt").read_bytes() == files["model.pt"]


def seed_team_id(svc) -> int:
    with svc.db.session() as s:
        return s.scalar(select(Team.id).where(Team.name == "nlp"))


def test_continue_is_refused_for_a_running_job_and_a_job_without_output(env):
    svc, backend, bare, work, alice = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok and post(svc, sha).ok
    job = last_job(svc)
    with pytest.raises(OpError, match="branch exp-1 already has job"):
        continuing.continue_job(svc, alice, job.id)
    with pytest.raises(OpError) as e:
        continuing.continue_job(svc, bob(svc), job.id)
    assert e.value.status == 404


def test_a_version_from_a_job_output_is_bound_by_a_third_job_and_billed(env):
    svc, backend, bare, work, alice = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok and post(svc, sha).ok
    job = last_job(svc)
    end_job(svc, job.id, {"ckpt/w.bin": b"w" * 3000, "notes.txt": b"n"})
    repos.create_repo(svc, alice, "nlp", "resnet", "model")
    v = outputs.version_from_job(svc, alice, job.id, "nlp", "resnet")
    assert (v["number"], v["file_count"], v["size_bytes"], v["source"]) == (1, 2, 3001, f"job {job.id}")
    shown = versions.show_version(svc, alice, "nlp", "resnet", 1)
    assert sorted(f["path"] for f in shown["files"]) == ["ckpt/w.bin", "notes.txt"]
    # no copy: the version's file is the kept output's inode
    kept = outputs.kept_dir(svc, seed_team_id(svc), job.id) / "ckpt" / "w.bin"
    vfile = svc.config.data_dir / "datastore" / "repos"
    [vpath] = list(vfile.glob("*/versions/1/ckpt/w.bin"))
    assert vpath.stat().st_ino == kept.stat().st_ino
    assert pre(svc, sha, branch="third", options=["input0=resnet:1", f"input1=job:{job.id}"]).ok

    svc.clock.advance(hours=2)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        charges = {e.resource: e for e in s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "storage"))}
    assert charges["data:nlp/resnet:1"].bytes == 3001
    assert charges[f"output:job/{job.id}"].bytes == 3001


def test_identical_files_across_versions_are_billed_once(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "ds", {"a": b"A" * 100, "b": b"B" * 10})
    make_version(svc, alice, "nlp", "ds", {"a": b"A" * 100, "c": b"C" * 7})
    with svc.db.session() as s:
        got = {x.resource: x.size_bytes for x in storage.version_samples(s)}
    assert got == {"data:nlp/ds:1": 110, "data:nlp/ds:2": 7}


def test_deleting_a_version_bills_its_last_minutes_then_stops(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "ds", {"a": b"A" * 1000})
    svc.clock.advance(minutes=30)
    versions.delete_version(svc, alice, "nlp", "ds", 1, "1")
    with svc.db.session() as s:
        [charge] = s.scalars(select(LedgerEntry).where(LedgerEntry.resource == "data:nlp/ds:1"))
        assert charge.to_minute - charge.from_minute == 30
    svc.clock.advance(hours=3)
    Reconciler(svc).tick()
    with svc.db.session() as s:
        assert len(list(s.scalars(select(LedgerEntry).where(LedgerEntry.resource == "data:nlp/ds:1")))) == 1


def test_deleting_a_bound_version_or_output_is_refused_while_the_job_is_active(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "ds", {"a": b"A"})
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha, branch="first").ok and post(svc, sha, branch="first").ok
    first = last_job(svc)
    end_job(svc, first.id, {"o": b"1"})
    outputs.ensure_kept(svc, first.id)
    assert pre(svc, sha, options=["input0=ds:1", f"input1=job:{first.id}"]).ok
    user = last_job(svc)
    with pytest.raises(OpError, match=f"job {user.id} binds") as e:
        versions.delete_version(svc, alice, "nlp", "ds", 1, "1")
    assert e.value.status == 409
    with pytest.raises(OpError, match=f"job {user.id} binds"):
        outputs.delete_output(svc, alice, first.id, str(first.id))
    with pytest.raises(OpError, match="type the job number"):
        outputs.delete_output(svc, alice, first.id, "nope")
    with pytest.raises(OpError, match="type the repository's name"):
        repos.delete_repo(svc, alice, "nlp", "ds", "d")


def test_a_team_over_its_storage_quota_is_refused_with_usage_and_what_to_delete(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "ds", {"a": b"A" * 2000})
    admin = Actor(0, "root", True)
    with pytest.raises(OpError):
        quota.set_quota(svc, alice, "nlp", 1000)
    quota.set_quota(svc, admin, "nlp", "1kB")
    with pytest.raises(OpError) as e:
        make_version(svc, alice, "nlp", "ds", {"b": b"B" * 10})
    assert e.value.status == 413
    assert "2.00 kB used" in str(e.value) and "quota 1.00 kB" in str(e.value) and "nlp/ds:1" in str(e.value)
    sha = commit_to_bare(bare, work, EP)
    r = pre(svc, sha)
    assert not r.ok and any("over its storage quota" in m for m in r.messages)
    usage = quota.storage_usage(svc, alice, "nlp")
    assert usage["used_bytes"] == 2000 and usage["quota_bytes"] == 1000
    quota.set_quota(svc, admin, "nlp", None)
    assert pre(svc, sha).ok


def test_parse_size():
    assert quota.parse_size("100GB") == 100 * 10**9
    assert quota.parse_size("1.5 TiB") == int(1.5 * 2**40)
    assert quota.parse_size(12345) == 12345
    for bad in ("", "ten", "-5GB", "5XB", True):
        with pytest.raises(OpError):
            quota.parse_size(bad)


def test_a_job_output_left_open_is_kept_on_first_need(env):
    svc, backend, bare, work, alice = env
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha).ok and post(svc, sha).ok
    job = last_job(svc)
    end_job(svc, job.id, {"f": b"data"})
    assert outputs.ensure_kept(svc, job.id) == "kept"
    assert outputs.ensure_kept(svc, job.id) == "kept"      # twice: no harm
    svc.clock.advance(minutes=5)
    assert last_job(svc).output_bytes == 4


def test_push_option_continue_starts_from_the_jobs_output_with_its_bindings(env):
    svc, backend, bare, work, alice = env
    make_version(svc, alice, "nlp", "ds", {"a": b"A"})
    sha = commit_to_bare(bare, work, EP)
    assert pre(svc, sha, options=["input0=ds:1"]).ok and post(svc, sha).ok
    first = last_job(svc)
    end_job(svc, first.id, {"ckpt": b"epoch 3"})
    sha2 = commit_to_bare(bare, work, {"train.py": "new code\n"})
    r = pre(svc, sha2, options=[f"continue={first.id}", "input1=ds:1"])
    assert r.ok, r.messages
    new = last_job(svc)
    assert (new.commit_sha, new.continue_from) == (sha2, first.id)
    with svc.db.session() as s:
        assert {i.slot: i.label for i in s.scalars(select(JobInput).where(JobInput.job_id == new.id))} \
            == {0: "nlp/ds:1", 1: "nlp/ds:1"}     # the continued job's bindings, then the options
    assert post(svc, sha2).ok
    assert (Path(spec_of(svc, new.id)["output_dir"]) / "ckpt").read_bytes() == b"epoch 3"
    with svc.db.session() as s:
        assert s.get(Job, first.id).output_state == "kept"   # kept on first need
