"""Phase 2: score collected functions with phase-1 models, weight them by confidence, merge
them into phase-1 data with a distribution check, retrain with weights and compare the phases.
No Prefect here; ``flows/phase2.py`` orchestrates."""
