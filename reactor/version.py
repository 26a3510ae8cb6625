"""The version of reactor (one place: the package, the CLI and what it publishes read it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
