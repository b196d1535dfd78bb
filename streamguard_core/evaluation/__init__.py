"""Metrics, statistics, aggregation and reports."""
