"""convtvm's version (a leaf: result files and manifests record it)."""

__version__ = "0.1.0"
