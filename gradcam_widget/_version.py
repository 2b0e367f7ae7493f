"""The package's version, below every module that records it (the audit's manifest)."""

__version__ = "0.1.0"
