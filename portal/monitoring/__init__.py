"""The monitoring domain (docs/MONITORING.md): samples of the cluster and of each job, usage
statistics, alarms, notifications to users, and Prometheus metrics. Fed once per reconciler
tick from what the tick already asked Slurm (``reconciler.monitor``); pages read the database."""
