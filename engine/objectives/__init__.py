"""Objectives: each joins a batch and the stage's models into a loss and metrics."""
