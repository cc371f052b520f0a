"""The data pages (portal/web/data.py, data_upload.py) and the job page's inputs and /output
(portal/web/jobs.py) with Flask's test client, a logged-in session and a real SQLite database:
create, upload through the page's JSON endpoints (chunks, resume, CSRF, body bounds), download
(files and .tar), share, public, delete; a job's kept output listed, downloaded, made into a
version and deleted; a project's default input bindings."""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

import pytest
from sqlalchemy import select

from portal.app import create_app
from portal.db import DataRepo, Job, Project
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import csrf_token, login, make_world

MiB = 1024 * 1024


@pytest.fixture
def env(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    app = create_app(svc)
    yield svc, app, ids
    svc.db.dispose()


def client_as(app, name):
    c = app.test_client()
    r = login(c, name)
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    return c


def post(c, url, **data):
    data.setdefault("csrf_token", csrf_token(c))
    return c.post(url, data=data)


def flashes(c, url) -> str:
    return c.get(url).get_data(as_text=True)


def create(c, team="nlp", name="cifar", kind="dataset"):
    r = post(c, "/data", team=team, name=name, kind=kind, description="pictures")
    assert r.status_code == 302, r.get_data(as_text=True)[:300]
    return r


def upload(c, team, name, files: dict[str, bytes], chunk=3 * MiB):
    """The page's upload protocol (what upload.js does): manifest, chunks, commit."""
    token = csrf_token(c)
    hdr = {"X-CSRFToken": token}
    manifest = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                for p, b in files.items()]
    r = c.post(f"/data/{team}/{name}/uploads", json={"files": manifest}, headers=hdr)
    assert r.status_code == 201, r.get_data(as_text=True)
    up = r.get_json()
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    for sha, offset in up["missing"].items():
        data = by_sha[sha]
        while True:
            part = data[offset:offset + chunk]
            r = c.put(f"{up['objects_url']}{sha}?offset={offset}", data=part, headers=hdr,
                      content_type="application/octet-stream")
            assert r.status_code == 200, r.get_data(as_text=True)
            d = r.get_json()
            offset = d["offset"]
            if d["complete"]:
                break
    r = c.post(up["commit_url"], headers=hdr)
    assert r.status_code == 201, r.get_data(as_text=True)
    return up, r.get_json()


FILES = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 4000, "sub/deeper/c.csv": b"x,y\n1,2\n"}


# ------------------------------------------------------------------------- list and create

def test_create_list_and_outsider_sees_nothing(env):
    svc, app, _ids = env
    alice = client_as(app, "alice")
    page = alice.get("/data").get_data(as_text=True)
    assert 'id="new-repo"' in page and '<option value="nlp"' in page
    r = create(alice)
    assert r.headers["Location"].endswith("/data/nlp/cifar")
    page = flashes(alice, "/data/nlp/cifar")
    assert "Data repository nlp/cifar created" in page and "No versions yet" in page
    assert 'id="upload"' in page and "upload.js" in page and "sha256.js" in page
    assert 'id="delete-repo"' in page and 'id="share-form"' in page   # alice owns nlp
    assert 'id="public-form"' not in page                             # not a cluster admin
    listing = alice.get("/data").get_data(as_text=True)
    assert 'id="repos-mine"' in listing and "nlp/cifar" in listing
    # mallory (team vision) neither sees nor reaches it
    mallory = client_as(app, "mallory")
    assert "nlp/cifar" not in mallory.get("/data").get_data(as_text=True)
    r = mallory.get("/data/nlp/cifar")
    assert r.status_code == 404 and "there is no data repository nlp/cifar" in r.get_data(as_text=True)
    assert mallory.get("/data/nlp/cifar/1").status_code == 404
    # the Data link in the navigation
    assert 'href="/data"' in listing


def test_create_refuses_bad_input_with_the_reason_and_leaves_nothing(env):
    svc, app, _ids = env
    alice = client_as(app, "alice")
    r = post(alice, "/data", team="nlp", name="Bad Name!", kind="dataset")
    assert r.status_code == 302 and r.headers["Location"].endswith("/data")
    assert "is not allowed" in flashes(alice, "/data")
    r = post(alice, "/data", team="nlp", name="ok", kind="table")
    assert "kind must be dataset or model" in flashes(alice, "/data")
    create(alice, name="twice")
    post(alice, "/data", team="nlp", name="twice", kind="model")
    assert "exists already" in flashes(alice, "/data")
    # a team she is not in: the error page, nothing made
    r = post(alice, "/data", team="vision", name="sneak", kind="dataset")
    assert r.status_code in (302, 403, 404)
    with svc.db.session() as s:
        assert sorted(s.scalars(select(DataRepo.name))) == ["twice"]
    # no CSRF token: refused
    assert alice.post("/data", data={"team": "nlp", "name": "x", "kind": "dataset"}).status_code == 400


# ----------------------------------------------------------------------------- upload/download

def test_upload_makes_a_version_and_downloads_are_byte_identical(env):
    svc, app, _ids = env
    alice = client_as(app, "alice")
    create(alice)
    up, v = upload(alice, "nlp", "cifar", FILES)
    assert v["number"] == 1 and v["file_count"] == 3
    assert v["size_bytes"] == sum(map(len, FILES.values())) and v["source"] == "web upload"
    assert v["url"] == "/data/nlp/cifar/1" and v["repo_url"] == "/data/nlp/cifar"
    page = flashes(alice, "/data/nlp/cifar")
    assert "Version 1 of nlp/cifar uploaded: 3 file(s)" in page
    assert 'data-version="1"' in page and f'data-bytes="{v["size_bytes"]}"' in page
    vp = alice.get("/data/nlp/cifar/1").get_data(as_text=True)
    for path in FILES:
        assert path in vp
    assert 'id="delete-version"' in vp and "Download all (.tar)" in vp
    for path, data in FILES.items():
        r = alice.get(f"/data/nlp/cifar/1/files/{path}")
        assert r.status_code == 200 and r.data == data
        assert r.mimetype == "application/octet-stream"
        assert r.headers["Content-Disposition"].startswith("attachment")
    r = alice.get("/data/nlp/cifar/1/archive")
    assert r.status_code == 200 and r.mimetype == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.data)) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == FILES
    assert alice.get("/data/nlp/cifar/1/files/nope.txt").status_code == 404
    assert alice.get("/data/nlp/cifar/9").status_code == 404
    # carol (a plain member) reads it too; mallory does not
    carol = client_as(app, "carol")
    assert carol.get("/data/nlp/cifar/1/files/a.txt").data == b"alpha\n"
    assert client_as(app, "mallory").get("/data/nlp/cifar/1/files/a.txt").status_code == 404
    # a second upload with the same contents sends nothing again
    up2, v2 = upload(alice, "nlp", "cifar", {"again/a.txt": FILES["a.txt"]})
    assert up2["missing"] == {} and v2["number"] == 2


def test_chunk_endpoint_streams_large_bodies_but_stays_bounded(env):
    svc, app, _ids = env
    alice = client_as(app, "alice")
    create(alice, name="big")
    big = (b"0123456789abcdef" * (MiB // 16)) * 20 + b"tail"    # 20 MiB: over the app's 16 MiB
    token = csrf_token(alice)
    manifest = [{"path": "big.bin", "size": len(big), "sha256": hashlib.sha256(big).hexdigest()}]
    up = alice.post("/data/nlp/big/uploads", json={"files": manifest},
                    headers={"X-CSRFToken": token}).get_json()
    sha = manifest[0]["sha256"]
    url = f"{up['objects_url']}{sha}"
    # no CSRF header: refused with a JSON reason, nothing stored
    r = alice.put(f"{url}?offset=0", data=big[:10], content_type="application/octet-stream")
    assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    # over the chunk bound: 413 with the reason, before the body is read
    r = alice.put(f"{url}?offset=0", data=b"x", content_type="application/octet-stream",
                  headers={"X-CSRFToken": token}, environ_overrides={"CONTENT_LENGTH": str(65 * MiB)})
    assert r.status_code == 413 and "at most" in r.get_json()["error"]
    # bad offset: 400
    r = alice.put(f"{url}?offset=abc", data=b"x", headers={"X-CSRFToken": token})
    assert r.status_code == 400 and "offset" in r.get_json()["error"]
    # one 20 MiB chunk is taken (this route's bound is 64 MiB) ...
    r = alice.put(f"{url}?offset=0", data=big[:20 * MiB], headers={"X-CSRFToken": token},
                  content_type="application/octet-stream")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["offset"] == 20 * MiB and not r.get_json()["complete"]
    # ... and the upload resumes from the offset the server holds
    st = alice.get(up["status_url"]).get_json()
    assert st["missing"] == {sha: 20 * MiB}
    r = alice.put(f"{url}?offset={20 * MiB}", data=big[20 * MiB:], headers={"X-CSRFToken": token},
                  content_type="application/octet-stream")
    assert r.get_json()["complete"] is True
    v = alice.post(up["commit_url"], headers={"X-CSRFToken": token}).get_json()
    assert v["number"] == 1 and v["size_bytes"] == len(big)
    # every other route keeps the app's 16 MiB bound
    r = alice.post("/data", data={"csrf_token": token, "name": "x" * (17 * MiB)})
    assert r.status_code == 413


def test_upload_errors_are_json_with_the_servers_message(env):
    svc, app, _ids = env
    alice = client_as(app, "alice")
    create(alice)
    hdr = {"X-CSRFToken": csrf_token(alice)}
    r = alice.post("/data/nlp/cifar/uploads", json={"files": []}, headers=hdr)
    assert r.status_code == 400 and "at least one file" in r.get_json()["error"]
    r = alice.post("/data/nlp/cifar/uploads", data="not json", headers=hdr,
                   content_type="application/json")
    assert r.status_code == 400 and r.get_json()["ok"] is False
    r = alice.post("/data/nlp/cifar/uploads", headers=hdr,
                   json={"files": [{"path": "../etc/passwd", "size": 1, "sha256": "0" * 64}]})
    assert r.status_code == 400 and "relative" in r.get_json()["error"]
    r = alice.post("/data/nlp/nothere/uploads", headers=hdr,
                   json={"files": [{"path": "a", "size": 1, "sha256": "0" * 64}]})
    assert r.status_code == 404 and "no data repository" in r.get_json()["error"]
    # a wrong sha256 for the bytes: refused, the version is not made
    data = b"hello"
    r = alice.post("/data/nlp/cifar/uploads", headers=hdr,
                   json={"files": [{"path": "h.txt", "size": 5, "sha256": "ab" * 32}]})
    up = r.get_json()
    r = alice.put(f"{up['objects_url']}{'ab' * 32}?offset=0", data=data, headers=hdr,
                  content_type="application/octet-stream")
    assert r.status_code == 400 and r.get_json()["error"]
    r = alice.post(up["commit_url"], headers=hdr)
    assert r.status_code == 409 and r.get_json()["error"]
    # logged out: 401 JSON, not a redirect to the login page
    anon = app.test_client()
    r = anon.get(up["status_url"])
    assert r.status_code == 401 and "log in" in r.get_json()["error"]
    # another team's user cannot see the upload
    mallory = client_as(app, "mallory")
    assert mallory.get(up["status_url"]).status_code in (403, 404)
    with svc.db.session() as s:
        assert not s.scalar(select(DataRepo).where(DataRepo.name == "cifar")).versions


# ------------------------------------------------------------------ share, public, delete

def test_share_unshare_public_and_deletes(env):
    svc, app, _ids = env
    bob = client_as(app, "bob")              # administrator of nlp
    create(bob, name="shared")
    upload(bob, "nlp", "shared", {"f.txt": b"1"})
    mallory = client_as(app, "mallory")
    assert mallory.get("/data/nlp/shared").status_code == 404
    r = post(bob, "/data/nlp/shared/shares", team="vision")
    assert r.status_code == 302
    page = flashes(bob, "/data/nlp/shared")
    assert "shared with team vision" in page and 'id="shares"' in page
    assert mallory.get("/data/nlp/shared").status_code == 200
    assert 'id="repos-shared"' in mallory.get("/data").get_data(as_text=True)
    assert "nlp/shared" in mallory.get("/data").get_data(as_text=True)
    mp = mallory.get("/data/nlp/shared").get_data(as_text=True)
    assert 'id="upload"' not in mp and 'id="delete-repo"' not in mp     # read-only for vision
    post(bob, "/data/nlp/shared/shares", team="no-such-team")
    assert "no team" in flashes(bob, "/data/nlp/shared")
    # a plain member may not share
    carol = client_as(app, "carol")
    r = post(carol, "/data/nlp/shared/shares", team="vision")
    assert r.status_code == 403
    assert 'id="share-form"' not in carol.get("/data/nlp/shared").get_data(as_text=True)
    post(bob, "/data/nlp/shared/shares/vision/delete")
    assert mallory.get("/data/nlp/shared").status_code == 404
    # public: cluster administrators only
    assert post(bob, "/data/nlp/shared/public", public="true").status_code == 403
    dave = client_as(app, "dave")
    assert 'id="public-form"' in dave.get("/data/nlp/shared").get_data(as_text=True)
    post(dave, "/data/nlp/shared/public", public="true")
    assert "is now public" in flashes(dave, "/data/nlp/shared")
    assert "nlp/shared" in client_as(app, "erin").get("/data").get_data(as_text=True)
    post(dave, "/data/nlp/shared/public", public="false")
    assert client_as(app, "erin").get("/data/nlp/shared").status_code == 404
    # delete a version: the number typed again
    post(bob, "/data/nlp/shared/1/delete", confirm="2")
    assert "confirm" in flashes(bob, "/data/nlp/shared/1")
    post(bob, "/data/nlp/shared/1/delete", confirm="1")
    page = flashes(bob, "/data/nlp/shared")
    assert "Version 1 of nlp/shared deleted" in page and "No versions yet" in page
    # delete the repository: its name typed again
    post(bob, "/data/nlp/shared/delete", confirm="nope")
    assert "to confirm" in flashes(bob, "/data/nlp/shared")
    r = post(bob, "/data/nlp/shared/delete", confirm="shared")
    assert r.headers["Location"].endswith("/data")
    assert "deleted" in flashes(bob, "/data")
    assert bob.get("/data/nlp/shared").status_code == 404


# -------------------------------------------------------------------- a job's inputs, /output

def _job_with_output(svc, ids, files: dict[str, bytes]) -> int:
    """The world's succeeded job, with a /output the reconciler has not kept yet."""
    from portal.data import outputs
    jid = ids["succeeded"]
    live = outputs.live_dir(svc, jid)
    for rel, data in files.items():
        (live / rel).parent.mkdir(parents=True, exist_ok=True)
        (live / rel).write_bytes(data)
    with svc.db.transaction() as s:
        s.get(Job, jid).output_state = "open"
    return jid


def test_job_page_lists_downloads_versions_and_deletes_its_output(env):
    svc, app, ids = env
    out = {"model.pt": b"\x00weights" * 1000, "logs/train.txt": b"loss 0.1\n"}
    jid = _job_with_output(svc, ids, out)
    alice = client_as(app, "alice")
    page = alice.get(f"/jobs/{jid}").get_data(as_text=True)
    assert 'id="output-files"' in page and "model.pt" in page and "logs/train.txt" in page
    assert 'id="output-state">kept' in page and 'id="continue"' in page
    assert 'id="delete-output"' in page and 'id="output-to-version"' in page
    assert 'id="job-inputs"' in page and "No inputs bound" in page
    for rel, data in out.items():
        r = alice.get(f"/jobs/{jid}/output/files/{rel}")
        assert r.status_code == 200 and r.data == data
    r = alice.get(f"/jobs/{jid}/output/archive")
    with tarfile.open(fileobj=io.BytesIO(r.data)) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == out
    # an outsider: 404 everywhere
    mallory = client_as(app, "mallory")
    assert mallory.get(f"/jobs/{jid}/output/archive").status_code == 404
    assert mallory.get(f"/jobs/{jid}/output/files/model.pt").status_code == 404
    assert post(mallory, f"/jobs/{jid}/output/delete", confirm=str(jid)).status_code == 404
    # a data version from it
    create(alice, name="models", kind="model")
    r = post(alice, f"/jobs/{jid}/output/version", team="nlp", name="models")
    assert r.headers["Location"].endswith("/data/nlp/models/1")
    vp = flashes(alice, "/data/nlp/models/1")
    assert f"made from job {jid}" in vp and "model.pt" in vp and f"job {jid}" in vp
    post(alice, f"/jobs/{jid}/output/version", team="nlp", name="missing")
    assert "no data repository" in flashes(alice, f"/jobs/{jid}")
    # delete: the job number typed again
    post(alice, f"/jobs/{jid}/output/delete", confirm="1")
    assert "to confirm" in flashes(alice, f"/jobs/{jid}")
    post(alice, f"/jobs/{jid}/output/delete", confirm=str(jid))
    page = flashes(alice, f"/jobs/{jid}")
    assert "/output deleted" in page and 'id="output-state">deleted' in page
    assert alice.get(f"/jobs/{jid}/output/archive").status_code in (404, 409)
    # the version made from it keeps its files
    assert alice.get("/data/nlp/models/1/files/model.pt").data == out["model.pt"]


def test_job_page_without_output_and_running_job(env):
    svc, app, ids = env
    alice = client_as(app, "alice")
    page = alice.get(f"/jobs/{ids['running']}").get_data(as_text=True)
    assert 'id="job-output"' in page and 'id="continue"' not in page
    assert 'id="output-files"' not in page


# --------------------------------------------------------------- project default bindings

def test_project_settings_keep_default_input_bindings(env):
    svc, app, ids = env
    alice = client_as(app, "alice")
    create(alice)
    upload(alice, "nlp", "cifar", {"a.txt": b"a"})
    jid = _job_with_output(svc, ids, {"w.bin": b"w"})
    page = alice.get("/projects/nlp/proj").get_data(as_text=True)
    assert all(f'name="input{i}"' in page for i in range(5))
    form = {"gpu_type": "a4000", "gpu_count": "1", "image": "python", "time": "60",
            "input0": "nlp/cifar:latest", "input2": f"job:{jid}", "input1": ""}
    r = post(alice, "/projects/nlp/proj/settings", **form)
    assert r.status_code == 302, r.get_data(as_text=True)[:400]
    with svc.db.session() as s:
        saved = json.loads(s.get(Project, ids["proj"]).inputs)
    assert saved == {"input0": "nlp/cifar:latest", "input2": f"job:{jid}"}
    page = alice.get("/projects/nlp/proj").get_data(as_text=True)
    assert 'value="nlp/cifar:latest"' in page and f'value="job:{jid}"' in page
    # empty text drops a slot
    form.update(input0="")
    post(alice, "/projects/nlp/proj/settings", **form)
    with svc.db.session() as s:
        assert json.loads(s.get(Project, ids["proj"]).inputs or "{}") == {"input2": f"job:{jid}"}
    # a malformed binding or one the team may not read: the problem on the page, nothing saved
    for bad, why in (("a/b/c:1", "TEAM/NAME"), ("vision/secret-data:1", "no data repository")):
        form.update(input1=bad)
        r = post(alice, "/projects/nlp/proj/settings", **form)
        assert r.status_code == 400
        text = r.get_data(as_text=True)
        assert re.search(r'class="problems".*input1', text, re.S) and why in text
        assert f'value="{bad}"' in text      # what was typed stays in the form
    with svc.db.session() as s:
        assert json.loads(s.get(Project, ids["proj"]).inputs or "{}") == {"input2": f"job:{jid}"}


def test_continue_button_posts_to_the_service_and_shows_its_answer(env):
    svc, app, ids = env
    jid = _job_with_output(svc, ids, {"w.bin": b"w"})
    alice = client_as(app, "alice")
    assert 'id="continue-form"' in alice.get(f"/jobs/{jid}").get_data(as_text=True)
    # the world's job has no git branch behind it: the service refuses, the page says why
    r = post(alice, f"/jobs/{jid}/continue")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/jobs/{jid}")
    assert "no longer exists" in flashes(alice, f"/jobs/{jid}")
    assert alice.post(f"/jobs/{jid}/continue").status_code == 400          # no CSRF token
    assert post(client_as(app, "mallory"), f"/jobs/{jid}/continue").status_code == 404
    with svc.db.session() as s:
        assert s.scalar(select(Job.id).where(Job.continue_from == jid)) is None
