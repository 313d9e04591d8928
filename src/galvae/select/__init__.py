"""``galvae select``: the BIC grid over latent size × condition subsets × seeds, on Dask.

:func:`select_grid` trains one model per (d, conditions, seed) cell, resumably, scores each on the
test split (ln L, ELBO, χ²/pixel, BIC of docs/design.md §3, plus the importance-weighted bound and the
number of active latent dimensions), writes the grid table, the best model by mean BIC over seeds, and
the paper's Figure 2.
"""

from .cells import Cell, all_condition_sets, conditions_needed, parse_conditions, parse_latent
from .grid import GridResult, MissingConditionsError, comparable_view, missing_conditions, select_grid

__all__ = ["Cell", "GridResult", "MissingConditionsError", "all_condition_sets", "conditions_needed", "comparable_view",
           "missing_conditions", "parse_conditions", "parse_latent", "select_grid"]
