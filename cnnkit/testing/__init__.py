"""The conformance kit for plugin authors: ``check_layer`` runs every check of the layer contract
(layers.py; the batch-split checks live in split_checks.py)."""

from .layers import CheckResult, check_gradients, check_layer, gradient_mismatch, numerical_gradient, run_checks

__all__ = ["CheckResult", "check_gradients", "check_layer", "gradient_mismatch", "numerical_gradient", "run_checks"]
