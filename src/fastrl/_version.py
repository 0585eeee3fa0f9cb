"""The version of fastrl (one place: the package metadata and meta.json's producer read it)."""

__version__ = "0.1.0"
