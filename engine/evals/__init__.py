"""Evaluators: run on every rank on a fixed held-out set, reduce, and report metrics."""
