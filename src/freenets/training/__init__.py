"""Training FreeNets (paper, Algorithm 1): the loop, its records, checkpoints and stops."""
