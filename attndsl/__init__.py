"""attndsl: explain attention heads with programs."""
