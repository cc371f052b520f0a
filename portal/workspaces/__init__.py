"""Workspaces: JupyterLab on the cluster through the portal (docs/WORKSPACES.md).

service (start, stop, restart; what the gateway asks: gateway_target, touch) · queries (the
shape pages/API/CLI show, listing, the JupyterLab URL) · policy (idle policy and caps: cluster
row, team overrides) · idle (the reconciler's step: remind, then stop) · credential (the Jupyter
server's token, derived, never stored) · gateway/ (the HTTP + WebSocket proxy, asyncio).
"""
