"""Who the users are: log in with LDAP or local accounts; LDAP groups become teams.

* ``login.verify_credentials(svc, username, password) -> User | None`` — the one check the web
  login and the JSON API call (``login.authenticate`` also says why);
* ``team_sync.sync_ldap(svc) -> SyncReport`` — directory users → users, groups → teams, both ways;
  ``team_sync.maybe_sync_ldap(svc, now)`` — the reconciler's periodic hook;
* ``passwords`` — local account hashes (``slipway user add --password-stdin``, ``user passwd``);
* ``ldap_directory`` — the ldap3 adapter (search, bind, paged searches); ``names`` — name rules.

Import the submodules (``from portal.identity.login import verify_credentials``); this package
imports nothing eagerly so ``portal.cli`` can use it without an import cycle.
"""
