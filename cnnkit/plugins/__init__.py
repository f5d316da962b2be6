"""Plugins: the registry (entry points), provenance, the layer-contract checks, the scaffold and the layer doc."""
