"""cnnkit-extra: an example third-party layer plugin for cnnkit (batchnorm2d, leaky_relu).

cnnkit finds these layers through the ``cnnkit.layers`` entry points in this distribution's
pyproject.toml and imports a module only when a spec names its layer type, so this file stays empty.
"""

__version__ = "0.3.0"
