"""Issue 17 item 4: the first pushes of a new server all install the node program at once
(``integrations.node_runtime``); each must get a complete copy (the temporary copy was named by
the process id alone, so one thread's clean-up removed the copy another thread was building)."""
from __future__ import annotations

import concurrent.futures
import threading

from portal import integrations as ig
from tests.support.fakes import make_services


def test_concurrent_first_installs_all_get_a_complete_copy(tmp_path):
    svc = make_services(tmp_path)
    try:
        _src, files, _digest = ig._runner_sources()
        start = threading.Barrier(8)

        def install(_):
            start.wait()
            return ig.node_runtime(svc.config)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            dests = list(pool.map(install, range(8)))
        assert len(set(dests)) == 1
        node = dests[0] / "git_gateway" / "node"
        assert sorted(p.name for p in node.iterdir() if p.suffix == ".py") == \
            sorted(p.name for p in files)
        leftovers = [p.name for p in (svc.config.data_dir / "node").iterdir() if p.name.startswith(".")]
        assert leftovers == []
    finally:
        svc.db.dispose()
