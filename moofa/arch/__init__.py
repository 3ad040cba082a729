"""Supernet architecture as data: layouts (OFA, MOOFA), the memory-balance solver, blocks, the search space."""
