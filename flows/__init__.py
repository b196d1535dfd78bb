"""Prefect flows: the order of stages. Each flow also runs as plain Python (ephemeral Prefect)."""
