"""The real adapters behind the ports (``portal/ports.py``), one module per outside system:
``slurm`` (jobs: slurm_bridge's CliBackend; accounts: sacctmgr), ``git`` (git_gateway.repos),
``containers`` (container_images' catalog), ``mail`` (SMTP), ``metrics`` (an in-process registry
rendered in Prometheus' text format). Only ``portal.bootstrap`` builds them; the service layer
sees the ports."""
