"""Runs and sweeps (paper, section 5): run directories, ``results.csv`` and Table 2."""
