"""Quantize a model into precision variants through torchao, and store/load them.

``schemes`` names the recipes, ``apply`` runs them layer by layer, ``codec`` and ``storage`` write
and read variant directories, ``manifest`` describes them.
"""

from quantgate.quantize.schemes import SCHEMES, Scheme, get_scheme, scheme_names

__all__ = ["SCHEMES", "Scheme", "get_scheme", "scheme_names"]
