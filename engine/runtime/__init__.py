"""The training runtime: process groups, sharding, the loop, checkpoints, metrics and signals."""
