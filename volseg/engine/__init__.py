"""Training engine: loop, losses, checkpoints, feature cache, distributed runs."""
