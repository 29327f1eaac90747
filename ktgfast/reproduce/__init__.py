"""One command per paper table: ``ktgfast reproduce list`` and ``ktgfast
reproduce NAME`` (docs/reproduce.md).  ``RECIPES`` holds the tables
(``ktgfast/reproduce/tables/``), ``run_recipe`` trains one through the public
training API and appends to ``<out>/results.csv``."""
from .recipe import Paper, Recipe, Row
from .runner import RunOptions, run_recipe
from .tables import RECIPES, get_recipe

__all__ = ["Paper", "RECIPES", "Recipe", "Row", "RunOptions", "get_recipe", "run_recipe"]
