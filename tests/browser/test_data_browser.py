"""The data pages in a real browser (Playwright + Debian's chromium against waitress): a user
creates a dataset, uploads a folder of three files (one of ~9 MiB, so it travels in two 8 MiB
chunks after being hashed in 4 MiB slices by static/sha256.js), sees version 1 with the right
files and size, and downloads the .tar whose members are byte-identical; a job page shows the
job's kept /output and downloads one of its files. Screenshots: test-output/screenshots/."""
from __future__ import annotations

import hashlib
import os
import re
import tarfile

import pytest
from playwright.sync_api import expect

from portal.db import Job
from tests.support.fakes import FakeBackend, make_services
from tests.support.web import make_world

from .conftest import log_in, shot

MiB = 1024 * 1024


@pytest.fixture
def site(tmp_path, portal_server):
    svc = make_services(tmp_path / "srv", backend=FakeBackend())
    ids = make_world(svc)
    base = portal_server(svc)
    yield svc, base, ids
    svc.db.dispose()


def _csp_watch(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_sha256_js_matches_hashlib_when_fed_in_pieces(site, new_page):
    _svc, base, _ids = site
    page = new_page(base)
    log_in(page, base, "alice")
    page.goto(base + "/data")
    page.add_script_tag(url=base + "/static/sha256.js")
    for n in (0, 3, 55, 56, 64, 65, 1000, 70001):
        data = bytes((i * 7 + n) % 251 for i in range(n))
        got = page.evaluate("""([bytes, cut]) => {
            const a = new Uint8Array(bytes), h = new window.SlipwaySha256();
            h.update(a.subarray(0, cut)); h.update(a.subarray(cut)); return h.digest(); }""",
                            [list(data), n // 3])
        assert got == hashlib.sha256(data).hexdigest(), n


def test_upload_a_folder_see_the_version_and_download_the_archive(site, new_page, tmp_path):
    svc, base, _ids = site
    folder = tmp_path / "myset"
    (folder / "sub").mkdir(parents=True)
    files = {"readme.txt": b"three files, one large\n",
             "sub/big.bin": os.urandom(9 * MiB + 12345),
             "sub/labels.csv": b"id,label\n1,cat\n2,dog\n"}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    total = sum(map(len, files.values()))

    page = new_page(base)
    errors = _csp_watch(page)
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    log_in(page, base, "alice")
    page.click("header nav a:has-text('Data')")
    expect(page).to_have_url(re.compile(r"/data$"))
    form = page.locator("#new-repo")
    form.locator("select[name=team]").select_option("nlp")
    form.locator("input[name=name]").fill("photos")
    form.locator("select[name=kind]").select_option("dataset")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/data/nlp/photos$"))
    expect(page.locator(".flash.ok")).to_contain_text("Data repository nlp/photos created")
    expect(page.locator("#no-versions")).to_be_visible()

    page.set_input_files("#upload-folder", str(folder))
    page.click("#upload-button")
    row = page.locator('#versions tr[data-version="1"]')
    expect(row).to_be_visible(timeout=60_000)
    expect(page.locator("#upload-error")).to_be_hidden()
    expect(page.locator(".flash.ok")).to_contain_text("Version 1 of nlp/photos uploaded: 3 file(s)")
    expect(row.locator("td").nth(2)).to_have_text("3")
    expect(row.locator(f'td[data-bytes="{total}"]')).to_have_count(1)
    expect(row).to_contain_text("web upload")
    shot(page, "data-repo")
    big_sha = hashlib.sha256(files["sub/big.bin"]).hexdigest()
    assert len([u for u in puts if big_sha in u]) == 2, puts   # 8 MiB + the rest

    row.locator("a").first.click()
    expect(page).to_have_url(re.compile(r"/data/nlp/photos/1$"))
    expect(page.locator("#version-files")).to_have_text("3")
    expect(page.locator("#version-size")).to_have_attribute("data-bytes", str(total))
    for rel in files:
        expect(page.locator("#version-file-list")).to_contain_text(rel)
    shot(page, "data-version")
    with page.expect_download() as info:
        page.click("#download-archive")
    tar_path = tmp_path / "photos.tar"
    info.value.save_as(tar_path)
    with tarfile.open(tar_path) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read()
                   for m in tar.getmembers() if m.isfile()}
    assert members == files
    with page.expect_download() as info:
        page.click("#version-file-list a:has-text('labels.csv')")
    assert open(info.value.path(), "rb").read() == files["sub/labels.csv"]
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def test_upload_refusal_is_shown_verbatim(site, new_page, tmp_path):
    svc, base, _ids = site
    from portal.data import repos
    from portal.teams.access import Actor
    repos.create_repo(svc, Actor(id=0, name="dave", is_cluster_admin=True), "nlp", "tiny", "dataset")
    with svc.db.transaction() as s:
        from portal.db import Team
        from sqlalchemy import select
        s.scalar(select(Team).where(Team.name == "nlp")).storage_quota_bytes = 10
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    page = new_page(base)
    log_in(page, base, "alice")
    page.goto(base + "/data/nlp/tiny")
    page.set_input_files("#upload-files", str(tmp_path / "f.bin"))
    page.click("#upload-button")
    expect(page.locator("#upload-error")).to_be_visible(timeout=20_000)
    expect(page.locator("#upload-error")).to_contain_text(re.compile("quota", re.I))
    expect(page.locator("#upload-button")).to_be_enabled()
    expect(page.locator("#no-versions")).to_be_visible()


def test_job_page_shows_its_kept_output(site, new_page, tmp_path):
    svc, base, ids = site
    from portal.data import outputs
    jid = ids["succeeded"]
    out = {"checkpoint.pt": os.urandom(200_000), "metrics/final.json": b'{"acc": 0.93}\n'}
    live = outputs.live_dir(svc, jid)
    for rel, data in out.items():
        (live / rel).parent.mkdir(parents=True, exist_ok=True)
        (live / rel).write_bytes(data)
    with svc.db.transaction() as s:
        s.get(Job, jid).output_state = "open"    # ended; the next look keeps it
    page = new_page(base)
    log_in(page, base, "alice")
    page.goto(f"{base}/jobs/{jid}")
    expect(page.locator("#output-state")).to_have_text("kept")
    for rel in out:
        expect(page.locator("#output-files")).to_contain_text(rel)
    expect(page.locator("#continue")).to_be_visible()
    expect(page.locator("#output-archive")).to_have_text("Download all (.tar)")
    shot(page, "job-output")
    with page.expect_download() as info:
        page.click("#output-files a:has-text('final.json')")
    assert open(info.value.path(), "rb").read() == out["metrics/final.json"]
    with page.expect_download() as info:
        page.click("#output-archive")
    with tarfile.open(info.value.path()) as tar:
        got = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == out
    # the delete form works only once the job number is typed again
    button = page.locator("#delete-output button[type=submit]")
    expect(button).to_be_disabled()
    page.fill("#delete-output input[name=confirm]", str(jid))
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator(".flash.ok")).to_contain_text("/output deleted")
    expect(page.locator("#output-state")).to_have_text("deleted")
