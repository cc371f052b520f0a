"""The data domain's JSON API (``portal/api/data.py``, ``data_output.py``): repositories,
resumable uploads, byte-identical downloads, sharing, quota, job outputs and continue."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from sqlalchemy import select

from portal.app import create_app
from portal.db import DataVersion, Job
from portal.data import outputs as outputs_svc
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world

FILES = {"train/a.bin": bytes(range(256)) * 40, "train/b.txt": b"hello data\n",
         "labels.csv": b"id,label\n1,cat\n2,dog\n", "dup.txt": b"hello data\n"}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def manifest(files: dict[str, bytes]) -> list[dict]:
    return [{"path": p, "size": len(b), "sha256": sha(b)} for p, b in sorted(files.items())]


def add_tokens(svc, ids, *names):
    """make_world gives alice, carol, mallory and dave tokens; these users get one too."""
    from portal.db import User
    from portal.identity.tokens import create_token

    with svc.db.transaction() as s:
        for name in names:
            ids[f"{name}_token"] = create_token(s, s.scalar(select(User).where(User.name == name)),
                                                "cli", now=svc.now())


@pytest.fixture
def api(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    add_tokens(svc, ids, "bob", "erin")
    c = create_app(svc).test_client()

    def call(method, url, who="alice", **kw):
        headers = kw.pop("headers", {})
        if who:
            headers["Authorization"] = f"Bearer {ids[who + '_token']}"
        return c.open(url, method=method, headers=headers, **kw)

    yield svc, ids, call
    svc.db.dispose()


def create(call, team="nlp", name="cifar", kind="dataset", who="alice"):
    r = call("POST", "/api/data", who=who, json={"team": team, "name": name, "kind": kind,
                                                 "description": "small test set"})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["repo"]


def put(call, upload, digest, data: bytes, offset=0, who="alice"):
    return call("PUT", f"/api/data/uploads/{upload}/objects/{digest}?offset={offset}", who=who,
                data=data, content_type="application/octet-stream")


def push(call, files=FILES, ref="nlp/cifar", who="alice"):
    r = call("POST", f"/api/data/{ref}/uploads", who=who, json={"files": manifest(files)})
    assert r.status_code == 200, r.get_json()
    up = r.get_json()
    by_sha = {sha(b): b for b in files.values()}
    assert set(up["missing"]) == set(by_sha) and set(up["missing"].values()) == {0}
    for digest in up["missing"]:
        r = put(call, up["upload"], digest, by_sha[digest], who=who)
        assert r.status_code == 200 and r.get_json()["complete"] is True, r.get_json()
    r = call("POST", f"/api/data/uploads/{up['upload']}/commit", who=who)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["version"]


def test_create_list_show_and_names(api):
    _svc, _ids, call = api
    repo = create(call)
    assert (repo["ref"], repo["kind"], repo["public"], repo["latest"]) == ("nlp/cifar", "dataset", False, None)
    assert call("POST", "/api/data", json={"team": "nlp", "name": "cifar", "kind": "dataset"}).status_code == 409
    for body in ({"team": "nlp", "name": "Bad/Name", "kind": "dataset"},
                 {"team": "nlp", "name": "../x", "kind": "model"},
                 {"team": "nlp", "name": "ok", "kind": "table"},
                 {"team": "nlp", "name": 7, "kind": "model"}):
        r = call("POST", "/api/data", json=body)
        assert r.status_code == 400 and r.get_json()["ok"] is False, body
    assert call("POST", "/api/data", who="mallory",
                json={"team": "nlp", "name": "x", "kind": "model"}).status_code == 404
    assert [r["ref"] for r in call("GET", "/api/data").get_json()["repos"]] == ["nlp/cifar"]
    assert call("GET", "/api/data", who="mallory").get_json()["repos"] == []
    r = call("GET", "/api/data/nlp/cifar", who="carol")
    assert r.status_code == 200 and r.get_json()["repo"]["description"] == "small test set"
    # another team's private repository and a missing one answer the same
    a, b = call("GET", "/api/data/nlp/cifar", who="mallory"), call("GET", "/api/data/nlp/nope", who="mallory")
    assert a.status_code == b.status_code == 404
    assert a.get_json()["error"] == "there is no data repository nlp/cifar"
    assert b.get_json()["error"] == "there is no data repository nlp/nope"
    assert call("GET", "/api/data/nlp/cifar/versions/1/archive", who="mallory").status_code == 404
    assert call("GET", "/api/data/nlp/cifar", who=None).status_code == 401


def test_push_and_byte_identical_downloads(api):
    svc, _ids, call = api
    create(call)
    v = push(call)
    assert (v["ref"], v["number"], v["file_count"]) == ("nlp/cifar:1", 1, 4)
    assert v["size_bytes"] == sum(len(b) for b in FILES.values())
    shown = call("GET", "/api/data/nlp/cifar/versions/latest", who="carol").get_json()["version"]
    assert {f["path"]: f["sha256"] for f in shown["files"]} == {p: sha(b) for p, b in FILES.items()}
    for path, data in FILES.items():
        r = call("GET", f"/api/data/nlp/cifar/versions/1/files/{path}", who="carol")
        assert r.status_code == 200 and r.data == data, path
        assert path.rsplit("/", 1)[-1] in r.headers["Content-Disposition"]
    r = call("GET", "/api/data/nlp/cifar/versions/1/archive")
    assert r.status_code == 200 and r.mimetype == "application/x-tar"
    assert "nlp-cifar-1" in r.headers["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.data)) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == FILES
    assert call("GET", "/api/data/nlp/cifar/versions/1/files/nope.txt").status_code == 404
    assert call("GET", "/api/data/nlp/cifar/versions/9").status_code == 404
    assert call("GET", "/api/data/nlp/cifar/versions/abc").status_code == 400
    assert call("GET", "/api/data/nlp/cifar/versions/1/files/a/../labels.csv").status_code in (400, 404)
    # a second push is version 2; its objects are already stored: nothing is missing
    r = call("POST", "/api/data/nlp/cifar/uploads", json={"files": manifest(FILES)})
    assert r.get_json()["missing"] == {}
    assert call("POST", f"/api/data/uploads/{r.get_json()['upload']}/commit").get_json()["version"]["number"] == 2
    # deleting a version needs its number typed again
    assert call("DELETE", "/api/data/nlp/cifar/versions/2", who="bob").status_code == 400
    assert call("DELETE", "/api/data/nlp/cifar/versions/2?confirm=2", who="carol").status_code == 403
    assert call("DELETE", "/api/data/nlp/cifar/versions/2?confirm=2", who="bob").status_code == 200
    assert call("GET", "/api/data/nlp/cifar").get_json()["repo"]["latest"] == 1
    with svc.db.session() as s:
        assert sorted(s.scalars(select(DataVersion.number))) == [1]


def test_resume_hash_mismatch_and_bad_manifests(api):
    svc, _ids, call = api
    create(call)
    big = FILES["train/a.bin"]
    files = {"a.bin": big}
    up = call("POST", "/api/data/nlp/cifar/uploads", json={"files": manifest(files)}).get_json()
    assert put(call, up["upload"], sha(big), big[:4000]).get_json()["complete"] is False
    again = call("POST", "/api/data/nlp/cifar/uploads", json={"files": manifest(files)}).get_json()
    assert again["upload"] == up["upload"] and again["missing"] == {sha(big): 4000}
    assert call("GET", f"/api/data/uploads/{up['upload']}").get_json()["missing"] == {sha(big): 4000}
    r = put(call, up["upload"], sha(big), big[100:200], offset=100)   # not where the part ends
    assert r.status_code == 409 and r.get_json()["offset"] == 4000
    assert call("POST", f"/api/data/uploads/{up['upload']}/commit").status_code == 409
    assert put(call, up["upload"], sha(big), big[4000:], offset=4000).get_json()["complete"] is True
    assert call("POST", f"/api/data/uploads/{up['upload']}/commit").status_code == 201

    # bytes that do not hash to the announced sha256: 400, the part is gone, no version
    liar = {"x.txt": b"A" * 50}
    up = call("POST", "/api/data/nlp/cifar/uploads", json={"files": manifest(liar)}).get_json()
    r = put(call, up["upload"], sha(b"A" * 50), b"B" * 50)
    assert r.status_code == 400 and r.get_json()["ok"] is False
    assert call("GET", f"/api/data/uploads/{up['upload']}").get_json()["missing"] == {sha(b"A" * 50): 0}
    assert call("POST", f"/api/data/uploads/{up['upload']}/commit").status_code == 409
    assert call("DELETE", f"/api/data/uploads/{up['upload']}").status_code == 200
    assert call("GET", "/api/data/nlp/cifar").get_json()["repo"]["latest"] == 1

    for bad in ([{"path": "../etc/passwd", "size": 1, "sha256": sha(b"x")}],
                [{"path": "/abs", "size": 1, "sha256": sha(b"x")}],
                [{"path": "a/./b", "size": 1, "sha256": sha(b"x")}],
                [{"path": "ok", "size": -1, "sha256": sha(b"x")}],
                [{"path": "ok", "size": 1, "sha256": "XYZ"}],
                "not a list"):
        r = call("POST", "/api/data/nlp/cifar/uploads", json={"files": bad})
        assert r.status_code == 400, (bad, r.get_json())
    assert put(call, up["upload"], "not-a-sha", b"x").status_code in (400, 404)
    assert call("PUT", f"/api/data/uploads/{up['upload']}/objects/{sha(b'x')}?offset=-1",
                data=b"x").status_code in (400, 404)
    # another team's member may not add versions or look at an upload
    assert call("POST", "/api/data/nlp/cifar/uploads", who="mallory",
                json={"files": manifest(files)}).status_code == 404
    with svc.db.session() as s:
        assert sorted(s.scalars(select(DataVersion.number))) == [1]


def test_chunk_body_bound_and_content_length(api):
    _svc, _ids, call = api
    create(call)
    data = b"\x07" * (17 * 1024 * 1024)     # over the app's 16 MiB bound for other requests
    up = call("POST", "/api/data/nlp/cifar/uploads", json={"files": manifest({"big": data})}).get_json()
    r = call("PUT", f"/api/data/uploads/{up['upload']}/objects/{sha(data)}?offset=0",
             input_stream=io.BytesIO(data[:10]), headers={"Content-Type": "application/octet-stream",
                                                          "Transfer-Encoding": "chunked"},
             environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 411 and "Content-Length" in r.get_json()["error"]
    r = call("PUT", f"/api/data/uploads/{up['upload']}/objects/{sha(data)}?offset=0", data=b"x",
             environ_overrides={"CONTENT_LENGTH": str(2**30 + 1)})   # over 1 GiB in one request
    assert r.status_code == 413
    r = put(call, up["upload"], sha(data), data)
    assert r.status_code == 200 and r.get_json()["complete"] is True, r.get_json()
    r = call("POST", "/api/data", data=b"{" + b" " * (17 * 1024 * 1024) + b"}", content_type="application/json")
    assert r.status_code == 413   # everything else stays bounded


def test_share_public_delete(api):
    _svc, _ids, call = api
    create(call)
    push(call)
    assert call("POST", "/api/data/nlp/cifar/shares", who="carol", json={"team": "vision"}).status_code == 403
    r = call("POST", "/api/data/nlp/cifar/shares", who="bob", json={"team": "vision"})
    assert r.status_code == 200 and r.get_json()["repo"]["shared_with"] == ["vision"]
    assert call("POST", "/api/data/nlp/cifar/shares", who="bob", json={"team": "nope"}).status_code == 404
    assert call("GET", "/api/data/nlp/cifar", who="mallory").status_code == 200
    assert "shared_with" not in call("GET", "/api/data/nlp/cifar", who="mallory").get_json()["repo"]
    assert call("GET", "/api/data/nlp/cifar/versions/1/files/labels.csv", who="mallory").data == FILES["labels.csv"]
    assert call("POST", "/api/data/nlp/cifar/uploads", who="mallory",
                json={"files": manifest(FILES)}).status_code == 403   # readers do not add versions
    assert call("DELETE", "/api/data/nlp/cifar/shares/vision", who="bob").status_code == 200
    assert call("GET", "/api/data/nlp/cifar", who="mallory").status_code == 404
    # public: cluster administrators only
    assert call("PUT", "/api/data/nlp/cifar/public", json={"public": True}).status_code == 403
    assert call("PUT", "/api/data/nlp/cifar/public", who="dave", json={"public": "yes"}).status_code == 400
    assert call("PUT", "/api/data/nlp/cifar/public", who="dave", json={"public": True}).get_json()["repo"]["public"]
    assert [r["ref"] for r in call("GET", "/api/data", who="erin").get_json()["repos"]] == ["nlp/cifar"]
    # delete: the name typed again, administrators and owners
    assert call("DELETE", "/api/data/nlp/cifar?confirm=cifar", who="carol").status_code == 403
    assert call("DELETE", "/api/data/nlp/cifar?confirm=wrong", who="bob").status_code == 400
    r = call("DELETE", "/api/data/nlp/cifar", who="bob", json={"confirm": "cifar"})
    assert r.status_code == 200 and r.get_json()["deleted"] == "nlp/cifar"
    assert call("GET", "/api/data/nlp/cifar").status_code == 404


def test_quota_refuses_uploads_with_a_message(api):
    _svc, _ids, call = api
    create(call)
    assert call("PUT", "/api/teams/nlp/storage", json={"quota": "1kB"}).status_code == 403
    assert call("PUT", "/api/teams/nlp/storage", who="dave", json={"quota": "lots"}).status_code == 400
    assert call("PUT", "/api/teams/nlp/storage", who="dave", json={}).status_code == 400
    r = call("PUT", "/api/teams/nlp/storage", who="dave", json={"quota": "1kB"})
    assert r.status_code == 200 and r.get_json()["quota_bytes"] == 1000
    big = {"a.bin": FILES["train/a.bin"]}            # 10 kB over a 1 kB quota
    r = call("POST", "/api/data/nlp/cifar/uploads", json={"files": manifest(big)})
    if r.status_code == 200:   # refused at the latest when the bytes arrive or at commit
        up = r.get_json()
        r = put(call, up["upload"], sha(big["a.bin"]), big["a.bin"])
        if r.status_code == 200:
            r = call("POST", f"/api/data/uploads/{up['upload']}/commit")
    assert r.status_code == 413 and "quota" in r.get_json()["error"], r.get_json()
    assert call("GET", "/api/data/nlp/cifar").get_json()["repo"]["latest"] is None
    usage = call("GET", "/api/teams/nlp/storage", who="carol").get_json()
    assert (usage["team"], usage["used_bytes"], usage["quota_bytes"]) == ("nlp", 0, 1000)
    assert call("GET", "/api/teams/nlp/storage", who="mallory").status_code == 404
    assert call("PUT", "/api/teams/nlp/storage", who="dave", json={"quota": None}).get_json()["quota_bytes"] is None
    assert push(call, big)["number"] == 1


def kept_output(svc, job_id, files: dict[str, bytes]) -> None:
    """Job ``job_id`` ended with these files in its /output (kept at the next look)."""
    live = outputs_svc.live_dir(svc, job_id)
    for path, data in files.items():
        (live / path).parent.mkdir(parents=True, exist_ok=True)
        (live / path).write_bytes(data)
    with svc.db.transaction() as s:
        s.get(Job, job_id).output_state = "open"


def test_job_output_list_download_version_delete(api):
    svc, ids, call = api
    jid = ids["succeeded"]
    out = {"model.pt": b"\x00weights" * 100, "logs/metrics.json": b'{"acc": 0.9}'}
    assert call("GET", f"/api/jobs/{jid}/output").get_json()["output"]["state"] == "none"
    kept_output(svc, jid, out)
    r = call("GET", f"/api/jobs/{jid}/output", who="carol")
    listing = r.get_json()["output"]
    assert listing["state"] == "kept" and listing["file_count"] == 2
    assert {f["path"]: f["size"] for f in listing["files"]} == {p: len(b) for p, b in out.items()}
    assert call("GET", f"/api/jobs/{jid}/output", who="mallory").status_code == 404
    assert call("GET", f"/api/jobs/{jid}/output/files/logs/metrics.json").data == out["logs/metrics.json"]
    assert call("GET", f"/api/jobs/{jid}/output/files/nope").status_code == 404
    r = call("GET", f"/api/jobs/{jid}/output/archive")
    with tarfile.open(fileobj=io.BytesIO(r.data)) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == out
    create(call, name="weights", kind="model")
    assert call("POST", "/api/data/nlp/weights/from-job", json={"job": "x"}).status_code == 400
    r = call("POST", "/api/data/nlp/weights/from-job", json={"job": jid})
    assert r.status_code == 201, r.get_json()
    v = r.get_json()["version"]
    assert (v["ref"], v["file_count"], v["source"]) == ("nlp/weights:1", 2, f"job {jid}")
    assert call("GET", "/api/data/nlp/weights/versions/1/files/model.pt").data == out["model.pt"]
    assert call("DELETE", f"/api/jobs/{jid}/output?confirm={jid}", who="carol").status_code == 403
    assert call("DELETE", f"/api/jobs/{jid}/output", who="bob").status_code == 400
    assert call("DELETE", f"/api/jobs/{jid}/output?confirm={jid}", who="bob").status_code == 200
    assert call("GET", f"/api/jobs/{jid}/output").get_json()["output"]["state"] == "deleted"
    # the version made from it stays
    assert call("GET", "/api/data/nlp/weights/versions/1/files/model.pt").data == out["model.pt"]


def test_continue_through_the_api(api):
    from tests.support.fakes import commit_to_bare, git

    svc, ids, call = api
    jid = ids["succeeded"]
    bare = svc.config.repos_root / "nlp" / "proj.git"
    commit = commit_to_bare(bare, svc.config.repos_root.parent / "w", {"slipway-entrypoint.sh": "echo hi\n"},
                            branch="exp-0")
    git("--git-dir", str(bare), "update-ref", "refs/heads/exp-0", commit)
    with svc.db.transaction() as s:
        s.get(Job, jid).commit_sha = commit
    assert call("POST", f"/api/jobs/{jid}/continue", who="mallory").status_code == 404
    kept_output(svc, jid, {"ckpt/step-1.pt": b"step one"})
    r = call("POST", f"/api/jobs/{jid}/continue", who="carol")
    assert r.status_code == 201, r.get_json()
    d = r.get_json()
    assert d["continue_of"] == jid and isinstance(d["job"], int) and d["message"]
    with svc.db.session() as s:
        new = s.get(Job, d["job"])
        assert (new.continue_from, new.branch) == (jid, "exp-0")


def test_project_default_inputs(api):
    _svc, _ids, call = api
    create(call)
    push(call)
    r = call("PATCH", "/api/projects/nlp/proj", who="carol", json={"inputs": {"input0": "nlp/cifar:latest"}})
    assert r.status_code == 200 and r.get_json()["project"]["inputs"] == {"input0": "nlp/cifar:latest"}
    assert call("GET", "/api/projects/nlp/proj").get_json()["project"]["inputs"] == {"input0": "nlp/cifar:latest"}
    for bad in ({"input9": "nlp/cifar"}, {"input0": "vision/secret:1"}, ["input0"]):
        r = call("PATCH", "/api/projects/nlp/proj", json={"inputs": bad})
        assert r.status_code == 400, (bad, r.get_json())
    r = call("PATCH", "/api/projects/nlp/proj", json={"gpus": "a4000:1"})   # inputs absent: kept
    assert r.get_json()["project"]["inputs"] == {"input0": "nlp/cifar:latest"}
    r = call("POST", "/api/teams/nlp/projects", json={"name": "two", "inputs": {"input1": "nlp/cifar:1"}})
    assert r.status_code == 201 and r.get_json()["project"]["inputs"] == {"input1": "nlp/cifar:1"}
    assert call("PATCH", "/api/projects/nlp/proj", json={"inputs": {}}).get_json()["project"]["inputs"] == {}
