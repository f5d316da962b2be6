"""The conformance kit for plugin authors: ``check_layer`` runs every check of the layer contract
(layers.py; gradients in gradients.py, batch splits in split_checks.py, how a model calls a layer in
model_calls.py), ``check_source`` every check of the dataset-source contract (sources.py)."""

from .layers import CheckResult, check_gradients, check_layer, gradient_mismatch, numerical_gradient, run_checks
from .sources import check_source, run_source_checks

__all__ = ["CheckResult", "check_gradients", "check_layer", "check_source", "gradient_mismatch", "numerical_gradient", "run_checks", "run_source_checks"]
