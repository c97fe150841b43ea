"""Subcommands of the `grok-edge` CLI (see edge/cli.py)."""
