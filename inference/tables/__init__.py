"""Comparison tables: per method x parameter (:func:`compare`) and per method."""

from inference.tables.compare import as_datatree, compare, flatten, method_table, reference_frame

__all__ = ["as_datatree", "compare", "flatten", "method_table", "reference_frame"]
