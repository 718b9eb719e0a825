"""Numba kernels that evaluate attention programs over ragged token batches."""
