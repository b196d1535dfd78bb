"""Collectors of real vulnerability fixes (OSV, GitHub advisories, NVD, ExploitDB, the offline
file source) and the git fix extractor that turns a fix commit into labelled function versions.

Every collector is a real client of its service (:mod:`.http` handles retries, rate limits and
the raw-response cache); none imports Prefect. The ``collect`` flow runs them concurrently.
"""
