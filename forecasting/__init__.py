"""Headroom: warn before a cloud instance runs out of CPU."""

import os

# Headroom's matrices are small (one instance at a time) and fits run side by side in a process pool:
# a multi-threaded BLAS only oversubscribes the cores. Set before NumPy loads; a user's value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
