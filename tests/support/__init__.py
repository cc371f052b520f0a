"""Test helpers: fake Slurm, test data, servers (never imported by product code)."""
