"""The workspace gateway: an aiohttp server beside the portal that carries HTTP and WebSockets
from the browser to a workspace's JupyterLab, with the portal's login (docs/WORKSPACES.md,
"The gateway").

* ``proxy``: ``make_gateway_app(resolve, touch)``, ``Target``, ``NotRunning``;
* ``websocket``: the relay; ``headers``: what is stripped, kept and injected;
* ``auth``: ``session_login(flask_app, cookies)``, the portal session (user id, session id);
* ``server``: ``start_gateway(...)`` / ``ThreadedServer``, serving in a thread of its own.
"""
