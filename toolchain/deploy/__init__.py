"""Deploying a `.tflite` model: verify, measure, cross-check, generate firmware, write the report."""
