"""Prefect tasks: thin wrappers that unpack arguments, call one core function, return paths.

Only this package and ``flows/`` import Prefect; ``streamguard_core`` never does.
"""
