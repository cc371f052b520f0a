"""Slipway's portal: config, database, jobs (state machine + push-to-run), reconciler, web app, CLI."""

__version__ = "0.1.0"
