"""The NumPy runtime: the Model, threads, tuning, memory estimates and the allocator."""
