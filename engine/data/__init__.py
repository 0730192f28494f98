"""Data generators (numpy only) and the counter-based streams that feed the trainer."""
