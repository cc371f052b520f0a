"""The ports (portal/ports.py): each real adapter and each in-memory one satisfies its Protocol,
and the in-memory ones behave like the real thing where the services rely on it."""
from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

import pytest
from slurm_bridge.cli import CliBackend
from slurm_bridge.errors import ControllerUnavailable
from slurm_bridge.runner import FakeRunner, result
from slurm_bridge.sync import AccountSpec, DesiredState, QosSpec, UserSpec

from container_images.catalog import Catalog
from portal import ports
from portal.adapters.git import GitRepos
from portal.adapters.mail import SmtpMailer
from portal.adapters.metrics import MetricsRegistry
from portal.adapters.slurm import SacctmgrAccounts, make_backend
from portal.billing import payments
from portal.teams.slurm_accounts import sync_accounts
from tests.support.fakes import (FakeBackend, InMemoryAccounts, InMemoryCatalog, InMemoryGit,
                                 InMemoryMailer, Mail, commit_to_bare, make_config,
                                 make_services, seed)

ROOT = Path(__file__).resolve().parents[2]


def desired(*teams: str, users: dict[str, tuple[str, ...]] | None = None) -> DesiredState:
    return DesiredState(
        accounts=tuple(AccountSpec(f"team-{t}", fairshare=100) for t in teams),
        users=tuple(UserSpec(u, f"team-{ts[0]}", {f"team-{t}": ("normal",) for t in ts})
                    for u, ts in sorted((users or {}).items())),
        qos=(QosSpec("normal"),), account_prefix="team-")


# ------------------------------------------------------------------ real adapters vs ports

def test_the_real_adapters_satisfy_their_ports(tmp_path):
    cfg = make_config(tmp_path)
    backend = make_backend(cfg)
    assert isinstance(backend, CliBackend) and isinstance(backend, ports.SlurmJobs)
    assert isinstance(SacctmgrAccounts(backend, "c"), ports.SlurmAccounts)
    assert isinstance(GitRepos(cfg), ports.Git)
    assert isinstance(Catalog.load(), ports.Containers)
    assert isinstance(SmtpMailer(), ports.Mailer)
    assert isinstance(MetricsRegistry(), ports.Metrics)


def test_the_in_memory_adapters_satisfy_their_ports():
    assert isinstance(FakeBackend(), ports.SlurmJobs)
    assert isinstance(InMemoryAccounts(), ports.SlurmAccounts)
    assert isinstance(InMemoryGit(), ports.Git)
    assert isinstance(InMemoryCatalog(), ports.Containers)
    assert isinstance(InMemoryMailer(), ports.Mailer)
    assert not isinstance(object(), ports.Mailer)


def test_the_payment_port_is_re_exported_by_billing():
    assert payments.PaymentProvider is ports.PaymentProvider and payments.Payment is ports.Payment

    class Provider:
        name = "test"

        def settled_payment(self, reference):
            return ports.Payment(reference, "nlp", Decimal("1.00"), "alice")

    assert isinstance(Provider(), ports.PaymentProvider)


def test_the_bootstrap_builds_the_real_adapters(tmp_path):
    from portal.bootstrap import bootstrap

    svc = bootstrap(make_config(tmp_path, smtp_host="mail.example"))
    try:
        assert isinstance(svc.backend, CliBackend) and isinstance(svc.accounts, SacctmgrAccounts)
        assert isinstance(svc.git, GitRepos) and isinstance(svc.catalog, Catalog)
        assert isinstance(svc.mailer, SmtpMailer) and isinstance(svc.metrics, MetricsRegistry)
        assert svc.mailer.host == "mail.example"
        assert svc.accounts.cluster == svc.config.cluster_name and svc.payments is None
    finally:
        svc.db.dispose()


# --------------------------------------------------------------------------- Slurm accounts

def test_sacctmgr_accounts_converge_through_sacctmgr():
    state = {"assoc": "root||||1||normal|\n", "user": "", "qos": "normal|0||cluster\n"}

    def show(argv, _input):
        return result(state[argv[4]])

    runner = FakeRunner({("sacctmgr", "--parsable2", "--noheader", "show"): show,
                         ("sacctmgr", "-i"): result("")})
    accounts = SacctmgrAccounts(CliBackend(runner, env={}), cluster="slipway")
    changes = accounts.converge(desired("nlp", users={"sw-alice": ("nlp",)}))
    assert changes == ["add account team-nlp (fairshare 100)", "add user sw-alice to team-nlp (normal)"]
    shows = [c["argv"] for c in runner.calls if "show" in c["argv"]]
    assert ("sacctmgr", "--parsable2", "--noheader", "show", "assoc", "where", "cluster=slipway") == shows[0][:7]
    assert [c["argv"][:4] for c in runner.calls if c["argv"][1] == "-i"] == [
        ("sacctmgr", "-i", "add", "account"), ("sacctmgr", "-i", "add", "user")]


def test_in_memory_accounts_answer_the_changes_then_nothing():
    acc = InMemoryAccounts()
    want = desired("nlp", "cv", users={"sw-alice": ("nlp", "cv"), "sw-bob": ("cv",)})
    first = acc.converge(want)
    assert "add account team-nlp (fairshare 100)" in first and "add QOS normal" in first
    assert acc.converge(want) == []                                    # in step: no changes
    assert acc.desired is want and acc.account_names() == ["team-cv", "team-nlp"]
    gone = acc.converge(desired("nlp", users={"sw-alice": ("nlp",)}))
    assert sorted(gone) == ["remove account team-cv", "remove sw-alice from team-cv", "remove user sw-bob"]
    acc.error = ControllerUnavailable("slurmdbd is down")
    with pytest.raises(ControllerUnavailable):
        acc.converge(want)
    assert acc.calls == 4


def test_sync_accounts_uses_the_accounts_port(tmp_path):
    svc = make_services(tmp_path)
    seed(svc, unix_user="sw-alice")
    changes = sync_accounts(svc)
    assert "add account team-nlp (fairshare 100)" in changes
    assert "add user sw-alice to team-nlp (normal)" in changes
    assert sync_accounts(svc) == []
    assert svc.accounts.account_names() == ["team-nlp"]
    svc.db.dispose()


def test_no_product_code_probes_a_backend():
    """No ``hasattr``/``getattr`` on a backend or adapter in portal/ (the ports say what exists)."""
    probe = re.compile(r"(hasattr|getattr)\((svc|self\.svc|ctx\.svc)?\.?(backend|accounts|git|catalog|mailer|metrics)\b")
    found = []
    for path in (ROOT / "portal").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("hasattr", "getattr") and probe.match(ast.unparse(node)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


# ------------------------------------------------------------------------------------ git

def test_git_repos_on_git_gateway(tmp_path):
    git = GitRepos(make_config(tmp_path))
    bare = git.create_repo("nlp", "proj")
    assert bare.is_dir() and git.create_repo("nlp", "proj") == bare       # exists: no error
    sha = commit_to_bare(bare, tmp_path / "work", {"slipway-entrypoint.sh": "echo hi\n"})
    assert git.entrypoint_problem("nlp", "proj", sha) is None
    other = commit_to_bare(bare, tmp_path / "work2", {"train.py": "print()\n"})
    assert "slipway-entrypoint.sh" in (git.entrypoint_problem("nlp", "proj", other) or "")
    assert git.resolve_ref("nlp", "proj", "refs/heads/exp-1") is None
    assert git.resolve_ref("nlp", "proj", f"refs/tmp/{sha}") == sha
    assert git.delete_ref("nlp", "proj", f"refs/tmp/{sha}") is True
    assert git.resolve_ref("nlp", "proj", f"refs/tmp/{sha}") is None
    assert git.repo_bytes("nlp", "proj") > 0
    assert git.delete_repo("nlp", "proj") is True and git.delete_repo("nlp", "proj") is False


def test_in_memory_git():
    git = InMemoryGit()
    git.create_repo("nlp", "proj")
    sha = git.commit("nlp", "proj", "refs/heads/exp-1", {"slipway-entrypoint.sh": "echo\n"})
    bad = git.commit("nlp", "proj", "refs/heads/exp-2", {"a.txt": ""})
    assert git.resolve_ref("nlp", "proj", "refs/heads/exp-1") == sha
    assert git.entrypoint_problem("nlp", "proj", sha) is None
    assert git.entrypoint_problem("nlp", "proj", bad) and git.entrypoint_problem("nlp", "proj", "f" * 40)
    git.sizes[("nlp", "proj")] = 1234
    assert git.repo_bytes("nlp", "proj") == 1234
    assert git.delete_ref("nlp", "proj", "refs/heads/exp-2") and not git.delete_ref("nlp", "proj", "refs/heads/exp-2")
    assert git.delete_repo("nlp", "proj") and not git.delete_repo("nlp", "proj")
    with pytest.raises(OSError):
        git.repo_bytes("nlp", "proj")


def test_services_work_on_the_in_memory_git(tmp_path):
    """A project created and deleted through the service layer touches only ``svc.git``."""
    from portal.projects import service as projects
    from portal.teams.access import Actor

    git = InMemoryGit()
    svc = make_services(tmp_path, git=git)
    seed(svc)
    assert ("nlp", "proj") in git.repos
    git.sizes[("nlp", "proj")] = 4096
    assert projects.storage_bytes(svc, "nlp", "proj") == 4096
    ids = seed(svc, team="cv", user="bob", funds=None)
    assert ("cv", "proj") in git.repos
    actor = Actor(id=ids["user_id"], name="bob", is_cluster_admin=False)
    assert projects.delete_project(svc, actor, "cv", "proj", "cv/proj") == 0
    assert ("cv", "proj") not in git.repos and ("nlp", "proj") in git.repos
    svc.db.dispose()


# ----------------------------------------------------------------------------- containers

def test_in_memory_catalog():
    cat = InMemoryCatalog({"python": ("charliecloud",), "torch": ("apptainer",)})
    assert cat.names == ("python", "torch")
    assert cat.runtime_problem("python", "charliecloud") is None
    assert "no build for charliecloud" in cat.runtime_problem("torch", "charliecloud")
    assert "unknown image 'jax'" in cat.runtime_problem("jax", "apptainer")
    assert cat.image_digest("python", "charliecloud").startswith("sha256:")
    assert cat.sif_path("torch", "/img") == Path("/img/torch.sif")


def test_the_packaged_catalog_answers_what_the_services_ask():
    cat = Catalog.load()
    assert cat.names and all(isinstance(n, str) for n in cat.names)
    assert "unknown image" in (cat.runtime_problem("no-such-image", "charliecloud") or "")


# ----------------------------------------------------------------------------------- mail

def test_smtp_mailer_hands_the_message_to_the_server(monkeypatch):
    import smtplib

    seen = {}

    class FakeSMTP:
        def __init__(self, host, port, timeout):
            seen.update(host=host, port=port, timeout=timeout)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def starttls(self, context=None):
            seen["tls"] = True

        def login(self, user, password):
            seen["login"] = (user, password)

        def send_message(self, msg):
            seen["msg"] = msg

    monkeypatch.setattr(smtplib, "SMTP", FakeSMTP)
    SmtpMailer("mail.example", 587, sender="slipway@example", username="u", password="p",
               starttls=True).send("alice@example", "Job 7 ended", "It succeeded.\n")
    msg = seen["msg"]
    assert (seen["host"], seen["port"], seen["tls"], seen["login"]) == ("mail.example", 587, True, ("u", "p"))
    assert (msg["From"], msg["To"], msg["Subject"]) == ("slipway@example", "alice@example", "Job 7 ended")
    assert msg.get_content() == "It succeeded.\n"


def test_in_memory_mailer_keeps_what_was_sent():
    m = InMemoryMailer()
    m.send("a@x", "s1", "b1")
    m.send("b@x", "s2", "b2")
    assert m.sent == [Mail("a@x", "s1", "b1"), Mail("b@x", "s2", "b2")]


# -------------------------------------------------------------------------------- metrics

def test_metrics_registry_renders_prometheus_text():
    m = MetricsRegistry()
    assert m.render() == ""
    m.inc("slipway_jobs_submitted_total")
    m.inc("slipway_jobs_submitted_total", 2, {"team": "nlp"})
    m.inc("slipway_jobs_submitted_total", labels={"team": "nlp"})
    m.set("slipway_queue_depth", 4)
    m.set("slipway_balance_usd", 12.5, {"team": 'a"b\\c\nd'})
    assert m.value("slipway_jobs_submitted_total", {"team": "nlp"}) == 3
    assert m.render() == (
        "# TYPE slipway_balance_usd gauge\n"
        'slipway_balance_usd{team="a\\"b\\\\c\\nd"} 12.5\n'
        "# TYPE slipway_jobs_submitted_total counter\n"
        "slipway_jobs_submitted_total 1\n"
        'slipway_jobs_submitted_total{team="nlp"} 3\n'
        "# TYPE slipway_queue_depth gauge\n"
        "slipway_queue_depth 4\n")


def test_metrics_registry_refuses_nonsense():
    m = MetricsRegistry()
    m.inc("a_total")
    with pytest.raises(ValueError, match="is a counter"):
        m.set("a_total", 1)
    with pytest.raises(ValueError, match="cannot go down"):
        m.inc("a_total", -1)
    with pytest.raises(ValueError, match="invalid metric name"):
        m.inc("1bad")
    with pytest.raises(ValueError, match="invalid metric label"):
        m.inc("a_total", labels={"bad-label": "x"})
