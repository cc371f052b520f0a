"""Teams: access rules (who may do what in a team), members, Slurm accounts."""
