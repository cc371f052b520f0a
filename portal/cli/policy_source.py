"""Where the policy commands get their answers: the service layer (local mode, on the server)
or the JSON API (remote mode, ``/api/``, portal/api/policy.py). Both answer the same
dictionaries, and both converge Slurm right after a change it must see
(``portal.policy.apply.converge_now``: locally here, remotely in the API), so a command prints
the same either way, warning included."""
from __future__ import annotations

from dataclasses import asdict

from ..policy import apply, compute, grants, queue_admin, quotas, resources, shares, views
from .context import Ctx, actor, call
from .remote import RemoteSource


def policy_source(ctx: Ctx) -> "LocalPolicy | RemotePolicy":
    return RemotePolicy(ctx.remote) if ctx.remote is not None else LocalPolicy(ctx)


class LocalPolicy:
    """The policy commands against the database, acting as ``--as USER`` or the operator."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.svc = ctx.svc

    def _me(self):
        return actor(self.ctx)

    def compute_types(self) -> list[dict]:
        return compute.list_types(self.svc)

    def define_compute(self, name: str, fields: dict) -> dict:
        return call(compute.define, self.svc, self._me(), name, **fields)

    def remove_compute(self, name: str) -> list[str]:
        return call(compute.remove, self.svc, self._me(), name)

    def quotas(self, team: str) -> list[dict]:
        return call(views.team_quotas, self.svc, self._me(), team)

    def set_quota(self, team: str, resource: str, value, user: str | None) -> tuple[dict, str | None]:
        d = call(quotas.set_quota, self.svc, self._me(), team=team, resource=resource, value=value,
                 user=user)
        return d, apply.converge_now(self.svc)

    def grants(self, everything: bool) -> list[dict]:
        return call(grants.list_grants, self.svc, self._me(), everything=everything)

    def grant(self, who: str, team: bool, until, note: str) -> tuple[dict, str | None]:
        d = call(grants.grant, self.svc, self._me(), who, team=team, until=until, note=note)
        return d, apply.converge_now(self.svc)

    def revoke(self, who: str, team: bool) -> tuple[int, str | None]:
        n = call(grants.revoke, self.svc, self._me(), who, team=team)
        return n, apply.converge_now(self.svc)

    def shares(self, team: str) -> dict:
        return call(views.team_shares, self.svc, self._me(), team)

    def set_shares(self, team: str, value) -> tuple[dict, str | None]:
        call(shares.set_shares, self.svc, self._me(), team, value)
        warning = apply.converge_now(self.svc)
        return self.shares(team), warning

    def queue(self, team: str | None, user: str | None) -> list[dict]:
        rows = call(queue_admin.queue, self.svc, self._me(), team=team, user=user)
        return [asdict(r) for r in rows]

    def job_action(self, action: str, job_id: int) -> str:
        fn = {"hold": queue_admin.hold, "release": queue_admin.release,
              "requeue": queue_admin.requeue, "top": queue_admin.top}[action]
        return call(fn, self.svc, self._me(), job_id)

    def nodes(self) -> list[dict]:
        return call(queue_admin.nodes, self.svc, self._me())

    def node_update(self, node: str, state: str, reason: str | None) -> str:
        return call(queue_admin.node_update, self.svc, self._me(), node, state, reason)

    def plan(self) -> dict:
        return call(resources.plan, self.svc, self._me())

    def events(self, action: str | None, limit: int) -> list[dict]:
        return call(views.policy_log, self.svc, self._me(), action=action, limit=limit)


class RemotePolicy:
    """The same through the JSON API with the caller's access token."""

    def __init__(self, remote: RemoteSource):
        self.r = remote

    def _seg(self, value) -> str:
        return self.r._seg(value)

    def compute_types(self):
        return self.r.request("GET", "/api/compute-types")["compute_types"]

    def define_compute(self, name, fields):
        body = {k: v for k, v in fields.items() if v is not None}
        return self.r.request("PUT", f"/api/compute-types/{self._seg(name)}", body=body)["compute_type"]

    def remove_compute(self, name):
        return self.r.request("DELETE", f"/api/compute-types/{self._seg(name)}")["projects"]

    def quotas(self, team):
        return self.r.request("GET", f"/api/teams/{self._seg(team)}/quotas")["quotas"]

    def set_quota(self, team, resource, value, user):
        url = f"/api/teams/{self._seg(team)}/quotas/{self._seg(resource)}"
        if value is None:
            d = self.r.request("DELETE", url, params={"user": user})
        else:
            d = self.r.request("PUT", url, body={"value": value, "user": user})
        return d["quota"], d.get("warning")

    def grants(self, everything):
        return self.r.request("GET", "/api/emergency-grants",
                              params={"all": "1" if everything else None})["grants"]

    def grant(self, who, team, until, note):
        d = self.r.request("POST", "/api/emergency-grants",
                           body={"who": who, "team": team, "until": until, "note": note})
        return d["grant"], d.get("warning")

    def revoke(self, who, team):
        d = self.r.request("POST", "/api/emergency-grants/revoke", body={"who": who, "team": team})
        return d["revoked"], d.get("warning")

    def shares(self, team):
        return self.r.request("GET", f"/api/teams/{self._seg(team)}/shares")["shares"]

    def set_shares(self, team, value):
        d = self.r.request("PUT", f"/api/teams/{self._seg(team)}/shares", body={"shares": value})
        return d["shares"], d.get("warning")

    def queue(self, team, user):
        return self.r.request("GET", "/api/queue", params={"team": team, "user": user})["queue"]

    def job_action(self, action, job_id):
        return self.r.request("POST", f"/api/queue/{int(job_id)}/{action}", body={})["message"]

    def nodes(self):
        return self.r.request("POST", "/api/nodes/query", body={})["nodes"]

    def node_update(self, node, state, reason):
        body = {"reason": reason} if reason is not None else {}
        return self.r.request("POST", f"/api/nodes/{self._seg(node)}/{state}", body=body)["message"]

    def plan(self):
        d = self.r.request("GET", "/api/resources")
        return {"sampled_at": d["sampled_at"], "rows": d["rows"]}

    def events(self, action, limit):
        return self.r.request("GET", "/api/policy-events",
                              params={"action": action, "limit": limit})["events"]
