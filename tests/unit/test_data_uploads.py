"""Resumable uploads → versions, and versions shown, downloaded and deleted (portal/data/uploads.py,
versions.py) on a real store under a temp dir: dedupe, resume, wrong offsets, bad checksums,
bad manifests that leave nothing behind, half uploads never visible, access, quota, deletes
refused while a running job binds the version."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from sqlalchemy import func, select

from portal.data import repos, uploads, versions
from portal.data.store import DataStore
from portal.db import DataFile, DataUpload, DataVersion, Job, JobInput, Team, User
from portal.teams.access import Actor, Forbidden, NotFound, OpError
from tests.support.fakes import make_services
from tests.support.web import make_world


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def world(tmp_path):
    svc = make_services(tmp_path)
    ids = make_world(svc)
    repos.create_repo(svc, who(svc, "alice"), "nlp", "cifar", "dataset", "images")
    yield svc, ids
    svc.db.dispose()


def who(svc, name) -> Actor:
    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        return Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def entry(path: str, data: bytes) -> dict:
    return {"path": path, "size": len(data), "sha256": sha(data)}


def send_all(svc, actor, answer: dict, contents: dict[str, bytes]) -> None:
    for h, off in answer["missing"].items():
        data = contents[h]
        r = uploads.receive_chunk(svc, actor, answer["upload"], h, off, io.BytesIO(data[off:]),
                                  len(data) - off)
        assert r == {"sha256": h, "offset": len(data), "size": len(data), "complete": True}


def upload_version(svc, actor, files: dict[str, bytes], repo="cifar") -> dict:
    ans = uploads.start_upload(svc, actor, "nlp", repo, [entry(p, d) for p, d in files.items()])
    send_all(svc, actor, ans, {sha(d): d for d in files.values()})
    return uploads.commit_upload(svc, actor, ans["upload"])


def store(svc) -> DataStore:
    return DataStore.for_services(svc)


def repo_id(svc, name="cifar") -> int:
    from portal.db import DataRepo
    with svc.db.session() as s:
        return s.scalar(select(DataRepo.id).where(DataRepo.name == name))


def count(svc, model) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


FILES = {"train/a.png": b"A" * 3000, "train/b.png": b"B" * 5000, "copy/a.png": b"A" * 3000,
         "README": b"cifar\n", "empty.txt": b""}


def test_upload_commit_show_download(world):
    svc, _ids = world
    alice = who(svc, "alice")
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", [entry(p, d) for p, d in FILES.items()])
    assert ans["team"] == "nlp" and ans["repo"] == "cifar" and ans["state"] == "open"
    assert ans["total_bytes"] == 3000 + 5000 + 3000 + 6
    # identical content once; the empty file needs no bytes
    assert ans["missing"] == {sha(b"A" * 3000): 0, sha(b"B" * 5000): 0, sha(b"cifar\n"): 0}
    assert len(ans["upload"]) == 32
    send_all(svc, alice, ans, {sha(d): d for d in FILES.values()})
    assert uploads.upload_status(svc, alice, ans["upload"])["missing"] == {}
    v = uploads.commit_upload(svc, alice, ans["upload"])
    assert (v["ref"], v["number"], v["file_count"], v["size_bytes"]) == ("nlp/cifar:1", 1, 5, 11006)
    assert v["created_by"] == "alice" and v["source"] == "upload"
    assert uploads.upload_status(svc, alice, ans["upload"])["state"] == "committed"
    assert uploads.commit_upload(svc, alice, ans["upload"])["number"] == 1   # repeated: same
    shown = versions.show_version(svc, who(svc, "carol"), "nlp", "cifar", None)
    assert [f["path"] for f in shown["files"]] == sorted(FILES)
    path, size, name = versions.version_file(svc, alice, "nlp", "cifar", 1, "train/b.png")
    assert (path.read_bytes(), size, name) == (b"B" * 5000, 5000, "b.png")
    fname, stream = versions.version_archive(svc, alice, "nlp", "cifar", "latest")
    assert fname == "nlp-cifar-1.tar"
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        for p, data in FILES.items():
            assert tf.extractfile(f"nlp-cifar-1/{p}").read() == data
    # the incoming parts are gone once committed
    assert os.listdir(store(svc).repo_dir(repo_id(svc)) / "incoming") == []


def test_resume_continues_the_same_upload_from_its_offsets(world):
    svc, _ids = world
    alice = who(svc, "alice")
    big = os.urandom(40_000)
    files = [entry("big.bin", big), entry("small", b"s")]
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", files)
    with pytest.raises(OpError) as e:   # the connection breaks after 10000 bytes
        uploads.receive_chunk(svc, alice, ans["upload"], sha(big), 0, io.BytesIO(big[:10_000]), 40_000)
    assert e.value.status == 409 and "offset 10000" in str(e.value)
    again = uploads.start_upload(svc, alice, "nlp", "cifar", list(reversed(files)))
    assert again["upload"] == ans["upload"]
    assert again["missing"] == {sha(big): 10_000, sha(b"s"): 0}
    # another user with the same manifest gets an upload of their own
    carol = uploads.start_upload(svc, who(svc, "carol"), "nlp", "cifar", files)
    assert carol["upload"] != ans["upload"]
    r = uploads.receive_chunk(svc, alice, ans["upload"], sha(big), 10_000, io.BytesIO(big[10_000:]), 30_000)
    assert r["complete"] and r["offset"] == 40_000
    # carol's upload sees the object as stored already (dedupe across uploads)
    assert uploads.upload_status(svc, who(svc, "carol"), carol["upload"])["missing"] == {sha(b"s"): 0}


def test_wrong_offset_and_bad_checksum(world):
    svc, _ids = world
    alice = who(svc, "alice")
    data = b"0123456789" * 100
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", [entry("f", data)])
    up, h = ans["upload"], sha(data)
    uploads.receive_chunk(svc, alice, up, h, 0, io.BytesIO(data[:300]), 300)
    with pytest.raises(OpError) as e:
        uploads.receive_chunk(svc, alice, up, h, 200, io.BytesIO(data[200:]), 800)
    assert e.value.status == 409 and "offset 300" in str(e.value)
    with pytest.raises(OpError) as e:
        uploads.receive_chunk(svc, alice, up, h, 300, io.BytesIO(b"x" * 700), 700)
    assert e.value.status == 400 and "sha256" in str(e.value)
    assert uploads.upload_status(svc, alice, up)["missing"] == {h: 0}
    with pytest.raises(OpError) as e:
        uploads.commit_upload(svc, alice, up)
    assert e.value.status == 409 and "incomplete" in str(e.value)
    assert count(svc, DataVersion) == 0
    assert store(svc).object_shas(repo_id(svc)) == []
    with pytest.raises(NotFound):
        uploads.receive_chunk(svc, alice, up, sha(b"other"), 0, io.BytesIO(b"other"), 5)
    with pytest.raises(OpError, match="offset"):
        uploads.receive_chunk(svc, alice, up, h, -1, io.BytesIO(b""), 0)


def test_a_half_upload_is_never_a_version(world):
    svc, _ids = world
    alice = who(svc, "alice")
    a, b = b"a" * 100, b"b" * 100
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", [entry("a", a), entry("b", b)])
    uploads.receive_chunk(svc, alice, ans["upload"], sha(a), 0, io.BytesIO(a), 100)
    uploads.receive_chunk(svc, alice, ans["upload"], sha(b), 0, io.BytesIO(b[:50]), 50)
    with pytest.raises(OpError) as e:
        uploads.commit_upload(svc, alice, ans["upload"])
    assert e.value.status == 409 and "50 of 100" in str(e.value)
    assert repos.show_repo(svc, alice, "nlp", "cifar")["latest"] is None
    assert os.listdir(store(svc).repo_dir(repo_id(svc)) / "versions") == []
    with pytest.raises(NotFound, match="no versions"):
        versions.show_version(svc, alice, "nlp", "cifar", None)


@pytest.mark.parametrize("files, words", [
    ([], "at least one"),
    ("nope", "list"),
    ([{"path": "../x", "size": 1, "sha256": "a" * 64}], "file 1 ('../x')"),
    ([{"path": "/etc/passwd", "size": 1, "sha256": "a" * 64}], "relative"),
    ([{"path": "a/./b", "size": 1, "sha256": "a" * 64}], "normalised"),
    ([{"path": "ok", "size": -1, "sha256": "a" * 64}], "size"),
    ([{"path": "ok", "size": 2**43, "sha256": "a" * 64}], "size"),
    ([{"path": "ok", "size": "1", "sha256": "a" * 64}], "size"),
    ([{"path": "ok", "size": 1, "sha256": "A" * 64}], "sha256"),
    ([{"path": "ok", "size": 1, "sha256": "a" * 64, "mode": 7}], "unknown field"),
    ([{"path": "ok", "size": 0, "sha256": "a" * 64}], "disagree"),
    ([{"path": "d", "size": 1, "sha256": "a" * 64}, {"path": "d/f", "size": 1, "sha256": "a" * 64}],
     "is a file and also the directory"),
    ([{"path": "x", "size": 1, "sha256": "a" * 64}, {"path": "x", "size": 1, "sha256": "a" * 64}],
     "twice"),
    ([{"path": "x", "size": 1, "sha256": "a" * 64}, {"path": "y", "size": 2, "sha256": "a" * 64}],
     "two sizes"),
])
def test_bad_manifests_are_refused_and_leave_nothing(world, files, words):
    svc, _ids = world
    with pytest.raises(OpError) as e:
        uploads.start_upload(svc, who(svc, "alice"), "nlp", "cifar", files)
    assert e.value.status == 400 and words in str(e.value)
    assert count(svc, DataUpload) == 0
    assert os.listdir(store(svc).repo_dir(repo_id(svc)) / "incoming") == []


def test_too_many_files_and_bad_source(world):
    svc, _ids = world
    alice = who(svc, "alice")
    many = [{"path": f"f{i}", "size": 1, "sha256": "a" * 64} for i in range(100_001)]
    with pytest.raises(OpError, match="at most 100000"):
        uploads.start_upload(svc, alice, "nlp", "cifar", many)
    with pytest.raises(OpError, match="source"):
        uploads.start_upload(svc, alice, "nlp", "cifar", [entry("a", b"a")], source="job 3")


def test_dedupe_across_versions_stores_one_object(world):
    svc, _ids = world
    alice = who(svc, "alice")
    upload_version(svc, alice, {"a.bin": b"shared" * 100, "only1": b"one"})
    ans = uploads.start_upload(svc, alice, "nlp", "cifar",
                               [entry("moved/a.bin", b"shared" * 100), entry("new", b"two")])
    assert ans["missing"] == {sha(b"two"): 0}           # the shared content is not sent again
    send_all(svc, alice, ans, {sha(b"two"): b"two"})
    v2 = uploads.commit_upload(svc, alice, ans["upload"])
    assert v2["number"] == 2
    st, rid = store(svc), repo_id(svc)
    obj = os.lstat(st.object_path(rid, sha(b"shared" * 100)))
    assert obj.st_nlink == 3                            # objects/ + v1 + v2
    assert os.lstat(st.version_dir(rid, 2) / "moved/a.bin").st_ino == obj.st_ino


def test_access_rules(world):
    svc, _ids = world
    alice, carol, mallory = who(svc, "alice"), who(svc, "carol"), who(svc, "mallory")
    with pytest.raises(NotFound, match="no data repository nlp/cifar"):
        uploads.start_upload(svc, mallory, "nlp", "cifar", [entry("a", b"a")])
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", [entry("a", b"a")])
    for other in (carol, mallory):                      # somebody else's upload: not there
        with pytest.raises(NotFound):
            uploads.upload_status(svc, other, ans["upload"])
        with pytest.raises(NotFound):
            uploads.receive_chunk(svc, other, ans["upload"], sha(b"a"), 0, io.BytesIO(b"a"), 1)
    with pytest.raises(NotFound):
        uploads.upload_status(svc, alice, "../../etc")
    assert uploads.upload_status(svc, who(svc, "dave"), ans["upload"])["upload"] == ans["upload"]
    send_all(svc, alice, ans, {sha(b"a"): b"a"})
    uploads.commit_upload(svc, alice, ans["upload"])
    with pytest.raises(NotFound):
        versions.show_version(svc, mallory, "nlp", "cifar", 1)
    with pytest.raises(NotFound):
        versions.version_file(svc, mallory, "nlp", "cifar", 1, "a")
    with pytest.raises(Forbidden):
        versions.delete_version(svc, carol, "nlp", "cifar", 1, "1")


def test_version_file_paths(world):
    svc, _ids = world
    alice = who(svc, "alice")
    upload_version(svc, alice, {"d/f.txt": b"hello"})
    for bad in ("../../../etc/passwd", "/etc/passwd", "d/../d/f.txt"):
        with pytest.raises(OpError) as e:
            versions.version_file(svc, alice, "nlp", "cifar", 1, bad)
        assert e.value.status == 400
    for absent in ("d", "d/g.txt"):
        with pytest.raises(NotFound, match="nlp/cifar:1 has no file"):
            versions.version_file(svc, alice, "nlp", "cifar", 1, absent)
    with pytest.raises(NotFound, match="no version 9"):
        versions.version_file(svc, alice, "nlp", "cifar", 9, "d/f.txt")


def test_delete_version_refused_while_bound_then_frees_its_own_content(world):
    svc, ids = world
    alice = who(svc, "alice")
    upload_version(svc, alice, {"keep": b"kept" * 10, "gone": b"only in one" * 10})
    upload_version(svc, alice, {"keep": b"kept" * 10})
    with svc.db.session() as s:
        v1 = s.scalar(select(DataVersion.id).where(DataVersion.number == 1))
    with svc.db.transaction() as s:
        s.add(JobInput(job_id=ids["running"], slot=0, version_id=v1, label="nlp/cifar:1"))
    with pytest.raises(OpError, match="type the version number"):
        versions.delete_version(svc, alice, "nlp", "cifar", 1, "2")
    with pytest.raises(OpError) as e:
        versions.delete_version(svc, alice, "nlp", "cifar", 1, "1")
    assert e.value.status == 409 and f"job {ids['running']}" in str(e.value)
    with svc.db.transaction() as s:
        s.get(Job, ids["running"]).state = "succeeded"
    out = versions.delete_version(svc, who(svc, "bob"), "nlp", "cifar", 1, "1")
    assert out == {"ok": True, "deleted": "nlp/cifar:1", "freed_bytes": 110}
    st, rid = store(svc), repo_id(svc)
    assert not st.version_dir(rid, 1).exists()
    assert st.object_shas(rid) == [sha(b"kept" * 10)]
    assert (st.version_dir(rid, 2) / "keep").read_bytes() == b"kept" * 10
    assert count(svc, DataFile) == 1
    # numbers are never reused
    assert upload_version(svc, alice, {"new": b"n"})["number"] == 3
    with pytest.raises(NotFound):
        versions.delete_version(svc, alice, "nlp", "cifar", 1, "1")


def test_quota_refuses_an_upload_over_it_and_creates_nothing(world):
    svc, _ids = world
    alice = who(svc, "alice")
    upload_version(svc, alice, {"a": b"a" * 600})
    with svc.db.transaction() as s:
        s.scalar(select(Team).where(Team.name == "nlp")).storage_quota_bytes = 1000
    # content the repository holds already costs nothing
    ok = uploads.start_upload(svc, alice, "nlp", "cifar", [entry("a2", b"a" * 600), entry("b", b"b" * 300)])
    with pytest.raises(OpError) as e:
        uploads.start_upload(svc, alice, "nlp", "cifar", [entry("c", b"c" * 500)])
    assert e.value.status == 413 and "quota" in str(e.value)
    assert count(svc, DataUpload) == 2
    uploads.abort_upload(svc, alice, ok["upload"])


def test_abort_frees_what_only_it_needed(world):
    svc, _ids = world
    alice = who(svc, "alice")
    upload_version(svc, alice, {"a": b"a" * 10})
    ans = uploads.start_upload(svc, alice, "nlp", "cifar", [entry("a", b"a" * 10), entry("b", b"b" * 20)])
    send_all(svc, alice, ans, {sha(b"b" * 20): b"b" * 20})
    out = uploads.abort_upload(svc, alice, ans["upload"])
    assert out["state"] == "aborted" and out["freed_bytes"] == 20
    assert store(svc).object_shas(repo_id(svc)) == [sha(b"a" * 10)]
    with pytest.raises(OpError) as e:
        uploads.receive_chunk(svc, alice, ans["upload"], sha(b"b" * 20), 0, io.BytesIO(b"b" * 20), 20)
    assert e.value.status == 409
    with pytest.raises(OpError) as e:
        uploads.commit_upload(svc, alice, ans["upload"])
    assert e.value.status == 409
    with svc.db.session() as s:
        assert json.loads(s.get(DataUpload, ans["upload"]).manifest)[0]["path"] == "a"


def test_add_version_replaces_a_stale_tree_and_checks_objects(world):
    svc, _ids = world
    alice = who(svc, "alice")
    st, rid = store(svc), repo_id(svc)
    # a tree left by a version whose transaction never committed
    (st.version_dir(rid, 1) / "stale").mkdir(parents=True)
    assert upload_version(svc, alice, {"f": b"fresh"})["number"] == 1
    assert os.listdir(st.version_dir(rid, 1)) == ["f"]
    from portal.db import DataRepo
    with svc.db.transaction() as s, pytest.raises(OpError) as e:
        versions.add_version(s, svc, s.get(DataRepo, rid), [("x", sha(b"nowhere"), 7)], "alice",
                             "upload")
    assert e.value.status == 409 and not st.version_dir(rid, 2).exists()


def test_uploads_left_open_for_a_week_are_given_up_and_open_ones_are_bounded(tmp_path):
    import hashlib
    import io

    from portal.data import repos, uploads
    from portal.db import DataUpload
    from portal.teams.access import Actor, OpError
    from tests.support.fakes import make_services, seed
    svc = make_services(tmp_path)
    ids = seed(svc)
    alice = Actor(ids["user_id"], "alice")
    repos.create_repo(svc, alice, "nlp", "ds", "dataset")
    data = b"x" * 100
    sha = hashlib.sha256(data).hexdigest()
    up = uploads.start_upload(svc, alice, "nlp", "ds", [{"path": "f", "size": 100, "sha256": sha}])
    uploads.receive_chunk(svc, alice, up["upload"], sha, 0, io.BytesIO(data[:40]), 40)
    assert uploads.expire_stale(svc) == 0
    svc.clock.advance(days=8)
    assert uploads.expire_stale(svc) == 1
    with svc.db.session() as s:
        assert s.get(DataUpload, up["upload"]).state == "aborted"
    again = uploads.start_upload(svc, alice, "nlp", "ds", [{"path": "f", "size": 100, "sha256": sha}])
    assert again["upload"] != up["upload"] and again["missing"] == {sha: 0}
    for i in range(uploads.MAX_OPEN_PER_USER - 1):
        blob = f"file {i}".encode()
        uploads.start_upload(svc, alice, "nlp", "ds", [{"path": "g", "size": len(blob),
                                                       "sha256": hashlib.sha256(blob).hexdigest()}])
    with pytest.raises(OpError, match="unfinished uploads") as e:
        uploads.start_upload(svc, alice, "nlp", "ds", [{"path": "h", "size": 1,
                                                       "sha256": hashlib.sha256(b"h").hexdigest()}])
    assert e.value.status == 429
    svc.db.dispose()
