"""Training: progressive shrinking with distillation, checkpoints, data sets, evaluation."""
