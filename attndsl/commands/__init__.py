"""Subcommands of the attndsl CLI, one module per pipeline stage."""
