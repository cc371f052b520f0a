"""The runner moves a taken PORT only within the portal's configured port_min..port_max: the
spec carries the range, and the port the runner reports is one the portal records (a port
outside the range would be dropped by apply_event, leaving the proxy on someone else's port)."""
from __future__ import annotations

import json

from sqlalchemy import select

from git_gateway.node.ports import ensure_free_port
from git_gateway.node.spec import RunnerSpec
from portal.db import Job
from portal.jobs import push, service
from tests.support.fakes import FakeBackend, commit_to_bare, hook_payload, make_services, seed

Z = "0" * 40


def test_spec_carries_the_configured_port_range_and_the_relocated_port_is_recorded(tmp_path):
    backend = FakeBackend()
    svc = make_services(tmp_path, backend=backend, port_min=20000, port_max=20019)
    try:
        seed(svc)
        sha = commit_to_bare(svc.config.repos_root / "nlp" / "proj.git", tmp_path / "work",
                             {"slipway-entrypoint.sh": "echo hi\n"})
        upd = [("refs/heads/exp-1", Z, sha)]
        assert push.handle_pre_receive(svc, hook_payload("pre-receive", "nlp/proj", "alice",
                                                           upd)).ok
        assert push.handle_post_receive(svc, hook_payload("post-receive", "nlp/proj", "alice",
                                                            upd)).ok
        with svc.db.session() as s:
            [job] = list(s.scalars(select(Job)))
            job_id, first = job.id, job.port
        assert 20000 <= first <= 20019
        _, req = backend.submits[0]
        raw = json.loads(open(req.command[3]).read())
        assert (raw["port_min"], raw["port_max"]) == (20000, 20019)

        spec = RunnerSpec.from_dict(raw)
        assert (spec.port_min, spec.port_max) == (20000, 20019)
        # the job's PORT is taken on the node it lands on, and so are most others
        expected = 20013 if first != 20013 else 20014
        got = ensure_free_port(spec, is_free=lambda p: p == expected)
        assert got == expected and spec.env["PORT"] == str(expected)
        assert service.apply_event(svc, job_id, {"event": "started", "port": got}) == "running"
        with svc.db.session() as s:
            assert s.get(Job, job_id).port == expected     # the proxy follows the job
    finally:
        svc.db.dispose()
