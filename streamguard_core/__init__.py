"""StreamGuard core: data, preprocessing, models and training for C/C++ vulnerability detection.

This package never imports Prefect; orchestration lives in ``flows/`` and ``tasks/``.
"""

__version__ = "0.1.0"
