"""Training backends other than the NumPy runtime (imported only when asked for; their dependencies are extras)."""
