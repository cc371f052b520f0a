"""Jobs: what happens on push and how a job reaches Slurm, follows it and ends.

* ``states`` — the state machine; ``push`` — the git hooks (what happens on push), with
  ``push_options`` (options, settings checks), ``lookups``, ``submit`` (one claim, one sbatch),
  ``runner_spec`` (a job's files and the node program's spec), ``recovery`` (a lost post-receive);
* ``service`` — cancel, show, runner events; ``queries``, ``actions``, ``rerun``, ``delete``;
* ``reconciler`` — the loop that makes the database follow Slurm, bills and cuts off;
  ``unknown`` — submissions whose outcome is not known.
"""
