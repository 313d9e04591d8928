"""The cells of a selection grid: (latent size d, condition set, seed), their names and parsing."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from ..likelihood import n_parameters
from ..models.conditions import CONDITIONS, check_condition_names

VAE_LABEL = "vae"  # the condition set of a plain VAE, in names and tables


@dataclass(frozen=True, order=True)
class Cell:
    """One training of the grid."""

    d: int
    conditions: tuple[str, ...]
    seed: int

    @property
    def label(self) -> str:
        """The condition set as text: 'vae' or names joined by '+' (e.g. 'logmstar+logsfr')."""
        return conditions_label(self.conditions)

    @property
    def name(self) -> str:
        """Directory name under ``cells/``: ``d{d}_{label}_s{seed}``."""
        return f"d{self.d}_{self.label}_s{self.seed}"

    @property
    def k(self) -> int:
        """The paper's number of parameters: latent dimensions plus conditions."""
        return n_parameters(self.d, len(self.conditions))


def conditions_label(conditions) -> str:
    return "+".join(conditions) if conditions else VAE_LABEL


def all_condition_sets() -> list[tuple[str, ...]]:
    """All 16 subsets of {logmstar, logsfr, logssfr, metallicity}, the empty set (VAE) first."""
    return [c for r in range(len(CONDITIONS) + 1) for c in combinations(CONDITIONS, r)]


def parse_latent(text) -> list[int]:
    """Latent sizes from '1-8', '2,4,6', '1-3,8' or an int / iterable of ints."""
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, str):
        values = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            values.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    else:
        values = [int(v) for v in text]
    if not values or min(values) < 1:
        raise ValueError(f"latent sizes must be positive integers, got {text!r}")
    return sorted(set(values))


def parse_conditions(spec) -> list[tuple[str, ...]]:
    """Condition sets from 'all', 'none,logmstar,logmstar+logsfr' or a list of tuples/strings.

    'all' gives the 16 subsets; 'none' (or 'vae', or an empty tuple) is the plain VAE. Order is kept,
    repeats are dropped; each set's names are put in the canonical order of CONDITIONS.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return all_condition_sets()
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[tuple[str, ...]] = []
    for item in items:
        if isinstance(item, str):
            names = () if item.lower() in ("none", VAE_LABEL, "") else tuple(n.strip() for n in item.split("+"))
        else:
            names = tuple(item)
        check_condition_names(names)
        canonical = tuple(n for n in CONDITIONS if n in names)
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise ValueError(f"no condition sets in {spec!r}")
    return out


def conditions_needed(condition_sets) -> tuple[str, ...]:
    """Every condition some set of the grid uses: the properties a spectrum must have to take part, so
    that the VAE and every CVAE are compared on the same spectra."""
    return tuple(sorted({c for cs in condition_sets for c in cs}))


def grid_cells(latent, conditions, seeds) -> list[Cell]:
    """Every (d, conditions, seed); ``seeds`` is a count (0..n−1) or an explicit list."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    return [Cell(d, c, s) for c in conditions for d in latent for s in seed_list]
