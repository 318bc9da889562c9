"""Evaluation: recalibration, metrics and report, the best snapshot, the HParams row."""
