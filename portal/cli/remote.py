"""Remote mode: the user-facing commands through the JSON API (``/api/``) with a Bearer access
token — the API decides and answers; the CLI prints its refusals as they come."""
from __future__ import annotations

import ipaddress
import os
from urllib.parse import quote, urlsplit

from ..billing.funds import JSON_KEYS
from .output import fail


def read_token(token_file: str | None) -> str:
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            fail(f"cannot read the token file {token_file}: {exc.strerror or exc}")
        if not token:
            fail(f"the token file {token_file} is empty")
        return token
    token = (os.environ.get("SLIPWAY_TOKEN") or "").strip()
    if not token:
        fail("remote mode (--url / SLIPWAY_URL) needs an access token: set SLIPWAY_TOKEN or pass "
             "--token-file FILE (create one on the portal's Tokens page)")
    return token


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteSource:
    """The same commands through the JSON API (``/api/``) with a Bearer access token."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, *, allow_http: bool = False):
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            fail(f"--url must start with http:// or https://, not {url!r}")
        host = urlsplit(url).hostname or ""
        if url.startswith("http://") and not allow_http and not _is_loopback(host):
            fail(f"refusing to send your access token over plain http:// to {host}: use https://, "
                 "or --allow-http (SLIPWAY_ALLOW_HTTP=1) on a network you trust")
        self.url = url
        self.token = token
        self.timeout = timeout
        self._http = None

    def request(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None) -> dict:
        import requests  # heavy at start-up, and only remote mode needs it

        if self._http is None:
            self._http = requests.Session()
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            r = self._http.request(method, self.url + path, params=params, json=body, timeout=self.timeout,
                                   allow_redirects=False,
                                   headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
        except requests.RequestException as exc:
            fail(f"cannot reach Slipway at {self.url}: {exc}")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            fail(f"{self.url}{path} answered HTTP {r.status_code} without Slipway's JSON "
                 "(is --url the Slipway portal?)")
        if r.status_code >= 400 or data.get("ok") is False:
            fail(str(data.get("error") or f"HTTP {r.status_code} from {self.url}{path}"))
        return data

    @staticmethod
    def _seg(value: str) -> str:
        return quote(str(value), safe="")

    def jobs(self, team_name, state, limit):
        return self.request("GET", "/api/jobs", params={"team": team_name, "state": state,
                                                        "limit": limit})["jobs"]

    def job(self, job_id):
        return self.request("GET", f"/api/jobs/{int(job_id)}")["job"]

    def log_chunk(self, job_id, offset, task=None):
        path = f"/api/jobs/{int(job_id)}/log" if task is None \
            else f"/api/jobs/{int(job_id)}/tasks/{int(task)}/log"
        return self.request("GET", path, params={"offset": offset})

    def cancel(self, job_id, task=None):
        body = {} if task is None else {"task": int(task)}
        return self.request("POST", f"/api/jobs/{int(job_id)}/cancel", body=body)["message"]

    def rerun(self, job_id):
        return self.request("POST", f"/api/jobs/{int(job_id)}/rerun", body={})["message"]

    def delete_job(self, job_id):
        return self.request("DELETE", f"/api/jobs/{int(job_id)}", body={"confirm": str(int(job_id))})["message"]

    def tokens(self, user_name):
        return self.request("GET", "/api/tokens", params={"user": user_name})["tokens"]

    def revoke_token(self, token_id):
        self.request("DELETE", f"/api/tokens/{int(token_id)}")

    def projects(self, team_name):
        return self.request("GET", "/api/projects", params={"team": team_name})["projects"]

    def create_project(self, team_name, name, gpus, image, time_text):
        body = {"name": name, "gpus": gpus, "image": image, "time": time_text}
        created = self.request("POST", f"/api/teams/{self._seg(team_name)}/projects",
                               body={k: v for k, v in body.items() if v is not None})["project"]
        return self.project(team_name, created["name"])

    def project(self, team_name, name):
        return self.request("GET", f"/api/projects/{self._seg(team_name)}/{self._seg(name)}")["project"]

    def ledger(self, team_name):
        entries, before, balance = [], None, None
        while True:
            d = self.request("GET", f"/api/teams/{self._seg(team_name)}/ledger",
                             params={"limit": 1000, "before": before})
            balance = balance if balance is not None else d["balance"]
            entries.extend(d["entries"])
            before = d.get("next_before")
            if not before:
                break
        entries.sort(key=lambda e: e["id"])
        return balance, entries

    def add_funds(self, team_name, amount, note):
        d = self.request("POST", f"/api/teams/{self._seg(team_name)}/funds", body={"amount": amount, "note": note})
        return d["added"], d["balance"]

    def request_funds(self, team_name, amount, note):
        return self._fund_request(self.request("POST", f"/api/teams/{self._seg(team_name)}/fund-requests",
                                               body={"amount": amount, "note": note})["fund_request"])

    @staticmethod
    def _fund_request(r: dict) -> dict:
        return {k: r.get(k) for k in JSON_KEYS}  # the local mode's keys, in its order

    def fund_requests(self, state, team_name):
        rows = self.request("GET", "/api/fund-requests", params={"state": state or "all", "team": team_name,
                                                                  "limit": 1000})["fund_requests"]
        return [self._fund_request(r) for r in rows]

    def decide_fund_request(self, request_id, action, note):
        body = {} if action == "cancel" else {"note": note}
        r = self.request("POST", f"/api/fund-requests/{int(request_id)}/{action}", body=body)["fund_request"]
        return self._fund_request(r)

    # ------------------------------------------------------------------------ data (issue 11)
    # the long read timeout of a chunk, a commit or a download: the server hashes what it got

    SLOW = (30.0, 900.0)

    def _http_call(self, method: str, path: str, **kw):
        """One raw request (a chunk's bytes, a download): refusals become ``Error: …``."""
        import requests

        if self._http is None:
            self._http = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        try:
            r = self._http.request(method, self.url + path, headers=headers, allow_redirects=False,
                                   timeout=kw.pop("timeout", self.SLOW), **kw)
        except requests.RequestException as exc:
            fail(f"cannot reach Slipway at {self.url}: {exc}")
        if r.status_code >= 400:
            try:
                data = r.json()
            except ValueError:
                data = None
            r.close()
            error = data.get("error") if isinstance(data, dict) else None
            fail(str(error or f"HTTP {r.status_code} from {self.url}{path}"))
        return r

    def _download(self, path: str) -> tuple[str, object]:
        """``(filename, Iterator[bytes])`` of a streamed file or archive."""
        from email.message import Message

        r = self._http_call("GET", path, stream=True)
        m = Message()
        m["content-disposition"] = r.headers.get("Content-Disposition", "")
        name = m.get_filename() or path.rstrip("/").rsplit("/", 1)[-1]
        return name, r.iter_content(1024 * 1024)

    def _data(self, team, name) -> str:
        return f"/api/data/{self._seg(team)}/{self._seg(name)}"

    def data_list(self, team_name):
        return self.request("GET", "/api/data", params={"team": team_name})["repos"]

    def data_create(self, team_name, name, kind, description):
        return self.request("POST", "/api/data", body={"team": team_name, "name": name, "kind": kind,
                                                       "description": description or ""})["repo"]

    def data_show(self, team_name, name):
        return self.request("GET", self._data(team_name, name))["repo"]

    def data_version(self, team_name, name, version):
        return self.request("GET", f"{self._data(team_name, name)}/versions/{version or 'latest'}")["version"]

    def data_delete(self, team_name, name, confirm):
        return self.request("DELETE", self._data(team_name, name), body={"confirm": confirm})

    def data_delete_version(self, team_name, name, number, confirm):
        return self.request("DELETE", f"{self._data(team_name, name)}/versions/{int(number)}",
                            body={"confirm": confirm})

    def data_share(self, team_name, name, other):
        return self.request("POST", f"{self._data(team_name, name)}/shares", body={"team": other})["repo"]

    def data_unshare(self, team_name, name, other):
        return self.request("DELETE", f"{self._data(team_name, name)}/shares/{self._seg(other)}")["repo"]

    def data_public(self, team_name, name, public):
        return self.request("PUT", f"{self._data(team_name, name)}/public", body={"public": public})["repo"]

    def data_from_job(self, job_id, team_name, name):
        return self.request("POST", f"{self._data(team_name, name)}/from-job", body={"job": int(job_id)})["version"]

    def data_archive(self, team_name, name, version):
        return self._download(f"{self._data(team_name, name)}/versions/{version or 'latest'}/archive")

    def data_file(self, team_name, name, version, path):
        return self._download(f"{self._data(team_name, name)}/versions/{version or 'latest'}/files/"
                              + quote(path, safe="/"))

    def upload_start(self, team_name, name, files, source):
        return self.request("POST", f"{self._data(team_name, name)}/uploads",
                            body={"files": files, "source": source})

    def upload_chunk(self, upload_id, sha256, offset, stream, length):
        """Bytes ``offset`` … ``offset+length`` of an object: ``stream`` (``len()`` = length,
        ``read()``) is sent as the body with a Content-Length, never read whole into memory."""
        r = self._http_call("PUT", f"/api/data/uploads/{self._seg(upload_id)}/objects/{self._seg(sha256)}",
                            params={"offset": int(offset)}, data=stream,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(int(length))})
        return r.json()

    def upload_commit(self, upload_id):
        return self.request("POST", f"/api/data/uploads/{self._seg(upload_id)}/commit", body={})["version"]

    def job_output(self, job_id):
        return self.request("GET", f"/api/jobs/{int(job_id)}/output")["output"]

    def job_output_file(self, job_id, path):
        return self._download(f"/api/jobs/{int(job_id)}/output/files/" + quote(path, safe="/"))

    def job_output_archive(self, job_id):
        return self._download(f"/api/jobs/{int(job_id)}/output/archive")

    def delete_output(self, job_id):
        return self.request("DELETE", f"/api/jobs/{int(job_id)}/output", body={"confirm": str(int(job_id))})

    def continue_job(self, job_id):
        d = self.request("POST", f"/api/jobs/{int(job_id)}/continue", body={})
        return d["job"], d["message"]

    def storage(self, team_name):
        return self.request("GET", f"/api/teams/{self._seg(team_name)}/storage")

    def set_quota(self, team_name, quota):
        return self.request("PUT", f"/api/teams/{self._seg(team_name)}/storage", body={"quota": quota})

    def update_project(self, team_name, name, gpus, image, time_text, inputs, *, compute_type=None):
        body = {"gpus": gpus, "image": image, "time": time_text, "inputs": inputs,
                "compute_type": compute_type}
        self.request("PATCH", f"/api/projects/{self._seg(team_name)}/{self._seg(name)}",
                     body={k: v for k, v in body.items() if v is not None})
        return self.project(team_name, name)

    # ------------------------------------------------------------------ workspaces (issue 12)

    def workspace_page(self, page):
        return self.url + page

    def workspace_start(self, team_name, name, *, branch, gpus=None, cpus=None, mem=None,
                        image=None, time=None, inputs=None):
        body = {"branch": branch, "gpus": gpus, "cpus": cpus, "mem": mem, "image": image,
                "time": time, "inputs": inputs}
        d = self.request("POST", f"/api/projects/{self._seg(team_name)}/{self._seg(name)}/workspaces",
                         body={k: v for k, v in body.items() if v is not None})
        return d["workspace"], d["message"]

    def workspaces(self, team_name, active_only):
        return self.request("GET", "/api/workspaces", params={
            "team": team_name, "active": "1" if active_only else None})["workspaces"]

    def workspace(self, job_id):
        return self.request("GET", f"/api/workspaces/{int(job_id)}")["workspace"]

    def workspace_stop(self, job_id):
        return self.request("POST", f"/api/workspaces/{int(job_id)}/stop", body={})["message"]

    def workspace_restart(self, job_id):
        d = self.request("POST", f"/api/workspaces/{int(job_id)}/restart", body={})
        return d["workspace"], d["message"]

    def workspace_policy(self, team_name):
        return self.request("GET", "/api/workspace-policy", params={"team": team_name})["policy"]

    def set_workspace_policy(self, team_name, values):
        return self.request("PUT", "/api/workspace-policy", params={"team": team_name},
                            body=values)["policy"]
