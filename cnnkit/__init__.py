"""cnnkit: convolutional networks from JSON specs, trained with NumPy, shipped as one safe bundle."""

__version__ = "0.1.0"

from .errors import BundleError, CnnkitError, CnnkitWarning, DataError, DataWarning, ProviderMismatchWarning, RegistryError, SpecError  # noqa: E402
from .runtime.model import Model  # noqa: E402
from .spec import ModelSpec, load_spec, validate_spec  # noqa: E402


def load(path, *, allow_provider_mismatch=False):
    """Load a ``.cnnkit`` bundle as a Model ready for ``predict`` / ``predict_proba``.

    Each plugin layer must come from the distribution the bundle recorded: another version loads
    with a ``ProviderMismatchWarning``; another distribution is a ``BundleError`` unless
    ``allow_provider_mismatch=True`` (then a warning).
    """
    from .runtime.model import load as _load

    return _load(path, allow_provider_mismatch=allow_provider_mismatch)


def save(model, path, *, force=False):
    """Write ``model`` to ``path`` as a bundle, atomically; returns the path written.

    An existing bundle is replaced; any other file (or a read-only one) only with ``force=True``.
    """
    from .bundle import save as _save

    return _save(model, path, force=force)


def build(spec) -> Model:
    """A freshly initialised Model from a spec (dict, ModelSpec, or path to a JSON file)."""
    import os

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    return Model(spec)


def train(spec, data=None, on_step=None, on_epoch=None) -> Model:
    """Build and train a model from a spec; ``data`` defaults to the spec's dataset. Returns the model."""
    from .data import load_dataset

    from .training import fit, training_metadata

    model = build(spec)
    if data is None:
        data = load_dataset(model.spec.data, model.input_shape)
    model.classes = list(data.classes)
    history = fit(model, data, on_step=on_step, on_epoch=on_epoch)
    model.metadata = training_metadata(model, data, history)
    return model


__all__ = [
    "BundleError",
    "CnnkitError",
    "CnnkitWarning",
    "DataError",
    "DataWarning",
    "Model",
    "ModelSpec",
    "ProviderMismatchWarning",
    "RegistryError",
    "SpecError",
    "build",
    "load",
    "load_spec",
    "save",
    "train",
    "validate_spec",
]
