"""Fast paths the built-in layers share: pure functions of arrays, one file per kernel, NumPy only.

Each kernel has a plain reference in the layer it serves (or in the tests) and is checked against
it, against PyTorch and against float64 finite differences.
"""
