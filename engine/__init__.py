"""The runtime: turns a validated spec into a training job (imports schemas, never the other way round)."""
