"""quantgate: quantize a model into precision variants, gate them offline, serve and roll them out.

This package root stays import-light: importing ``quantgate`` must not import torch, so the CLI's
fast paths (``--help``, ``check``) start in milliseconds.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
