"""capdec-toolkit: train, export and quantize CapDec captioners into capdec-edge model bundles."""

__version__ = "0.1.0"
