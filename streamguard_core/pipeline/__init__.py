"""The production pipeline's core (no Prefect): one seed run, aggregation, report, registry."""
