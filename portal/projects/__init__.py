"""Projects: a team's git repositories with their GPU settings."""
