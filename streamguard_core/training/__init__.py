"""Training: one loop for the neural models, checkpoints, LR finder, collapse detection."""
