"""The LDAP config keys: defaults, environment, file, validation."""
from __future__ import annotations

import pytest

from portal.config import ConfigError, load_config


def test_defaults_mean_no_ldap(tmp_path):
    cfg = load_config(env={}, data_dir=tmp_path)
    assert cfg.ldap_url == "" and cfg.ldap_uid_attr == "uid" and cfg.ldap_unix_attr == "uid"
    assert cfg.ldap_user_filter == "(&(objectClass=inetOrgPerson)(uid={username}))"
    assert cfg.ldap_sync_interval == 300.0


def test_from_env_and_file(tmp_path):
    f = tmp_path / "slipway.toml"
    f.write_text('[slipway]\nldap_url = "ldaps://ldap.example.org"\nldap_user_base = "ou=people,dc=ex"\n'
                 'ldap_sync_interval = 60\n')
    cfg = load_config(env={"SLIPWAY_CONFIG": str(f), "SLIPWAY_LDAP_UNIX_ATTR": "employeeNumber",
                           "SLIPWAY_LDAP_BIND_PASSWORD": "pw"}, data_dir=tmp_path)
    assert (cfg.ldap_url, cfg.ldap_user_base, cfg.ldap_sync_interval) == (
        "ldaps://ldap.example.org", "ou=people,dc=ex", 60.0)
    assert cfg.ldap_unix_attr == "employeeNumber" and cfg.ldap_bind_password == "pw"


@pytest.mark.parametrize("over, msg", [
    (dict(ldap_url="http://x", ldap_user_base="dc=x"), "ldap://"),
    (dict(ldap_url="ldap://x"), "ldap_user_base"),
    (dict(ldap_url="ldap://x", ldap_user_base="dc=x", ldap_user_filter="(uid=*)"), "{username}"),
])
def test_validation(tmp_path, over, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(env={}, data_dir=tmp_path, **over)


def test_slurm_account_prefix_from_env_and_validated(tmp_path):
    assert load_config(env={}, data_dir=tmp_path).slurm_account("nlp") == "team-nlp"
    cfg = load_config(env={"SLIPWAY_SLURM_ACCOUNT_PREFIX": "gpu-"}, data_dir=tmp_path)
    assert cfg.slurm_account("nlp") == "gpu-nlp"
    for bad in ("Team-", "-x", "x y", "a" * 17, "x,y"):
        with pytest.raises(ConfigError, match="slurm_account_prefix"):
            load_config(env={"SLIPWAY_SLURM_ACCOUNT_PREFIX": bad}, data_dir=tmp_path)
