"""Topology rules: how a FreeNet's graph changes between rounds (paper, Algorithm 2)."""
