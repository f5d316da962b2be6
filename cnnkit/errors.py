"""The exceptions cnnkit raises for bad input; each message is one line a user can act on."""


class CnnkitError(ValueError):
    """Base of every error caused by user input (specs, bundles, data, plugins)."""


class SpecError(CnnkitError):
    """A model spec is malformed or describes an impossible network.

    ``errors`` holds every problem found as ``(json_path, message)`` pairs; ``str()`` is one line.
    """

    def __init__(self, errors: list[tuple[str, str]] | str):
        if isinstance(errors, str):
            errors = [("", errors)]
        self.errors = list(errors)
        parts = [_printable(f"{path}: {msg}" if path else msg) for path, msg in self.errors]
        more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
        super().__init__("; ".join(parts[:3]) + more)


class RegistryError(CnnkitError):
    """A layer type is unknown, ambiguous, fails to import or breaks the layer contract."""


class LayerError(RegistryError):
    """A layer broke the layer contract while a model ran it, or raised inside its own code (the message names it)."""


class BundleError(CnnkitError):
    """A bundle file is malformed, corrupted, hostile, or needs something not installed."""


class DataError(CnnkitError):
    """Input data is missing, malformed or of the wrong shape."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temp files are removed and the work stops the same way."""


class CnnkitWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it as one line)."""


class DataWarning(CnnkitWarning):
    """Data that looks wrong for the model, such as a pixel range the preprocessing does not expect; the work goes on."""


class ProviderMismatchWarning(CnnkitWarning):
    """A bundle's layer type is served by another version (or, when allowed, another distribution) than recorded."""


def _printable(text: str) -> str:
    """Control characters (a newline in a JSON key, say) escaped, so a message stays one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
