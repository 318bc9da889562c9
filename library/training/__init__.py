"""The run loop: training in cycles, the modes that read a checkpoint, hooks, held checkpoints."""
