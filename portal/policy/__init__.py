"""The policy domain (docs/POLICY.md): compute types, quotas, emergency grants, team shares,
the admission of a new job's compute, the words for why a job waits, turn-taking between teams,
the budget mirrored into Slurm, and the administrators' queue and node actions."""
