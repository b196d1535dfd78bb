"""Detectors: one protocol (fit, predict_proba, save, load) for every model kind."""
