"""Subnet search: the accuracy predictor and constrained evolution."""
