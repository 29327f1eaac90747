"""ktgfast: fast training of knowledge-transfer graphs.

Importing the package never requires the compiled extension; using an op
without it raises one actionable error (see ``ktgfast.ops``).
"""
from .edges import LABEL, EdgeSpec, EdgeTable, progress_of

__version__ = "0.1.0"

__all__ = ["LABEL", "EdgeSpec", "EdgeTable", "progress_of", "__version__"]
