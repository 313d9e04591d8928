"""Conditions for a CVAE: physical properties, Yeo–Johnson transformed and standardised.

Each condition's transform is fitted on the training split and stored in the model's config.json as
three plain numbers (λ, mean, std), so a model directory is all one needs to transform new galaxies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONDITIONS = ("logmstar", "logsfr", "logssfr", "metallicity")


@dataclass
class PowerTransform:
    """Yeo–Johnson power transform with standardisation, for one property."""

    name: str
    lmbda: float
    mean: float
    std: float

    @classmethod
    def fit(cls, name: str, values: np.ndarray) -> PowerTransform:
        """Fit λ by maximum likelihood on finite ``values``, then the mean and std of the result."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < 2:
            raise ValueError(f"condition {name!r}: fewer than 2 finite training values")
        y, lmbda = stats.yeojohnson(v)
        std = float(y.std())
        return cls(name, float(lmbda), float(y.mean()), std if std > 0 else 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Transformed, standardised values (NaN stays NaN)."""
        v = np.asarray(values, dtype=np.float64)
        out = np.full(v.shape, np.nan)
        ok = np.isfinite(v)
        out[ok] = (stats.yeojohnson(v[ok], lmbda=self.lmbda) - self.mean) / self.std
        return out

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        """Physical values from transformed ones (Yeo–Johnson inverted in closed form)."""
        y = np.asarray(values, dtype=np.float64) * self.std + self.mean
        lam = self.lmbda
        out = np.empty_like(y)
        pos = y >= 0
        if abs(lam) > 1e-12:
            out[pos] = np.power(y[pos] * lam + 1.0, 1.0 / lam) - 1.0
        else:
            out[pos] = np.expm1(y[pos])
        if abs(lam - 2.0) > 1e-12:
            out[~pos] = 1.0 - np.power(-(2.0 - lam) * y[~pos] + 1.0, 1.0 / (2.0 - lam))
        else:
            out[~pos] = -np.expm1(-y[~pos])
        return out

    def to_dict(self) -> dict:
        return asdict(self)


class ConditionSet:
    """The ordered transforms of a CVAE's conditions; empty for a plain VAE."""

    def __init__(self, transforms: list[PowerTransform] | tuple = ()):
        self.transforms = list(transforms)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    @classmethod
    def fit(cls, props, names, rows: np.ndarray) -> ConditionSet:
        """Fit one transform per name on ``props[name][rows]`` (the training rows)."""
        check_condition_names(names)
        return cls([PowerTransform.fit(n, np.asarray(props[n], dtype=float)[rows]) for n in names])

    def raw_values(self, props, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, c) physical values from a table or mapping of columns, in this set's order."""
        if not self.names:
            first = props[props.colnames[0]] if hasattr(props, "colnames") else next(iter(props.values()))
            a = np.zeros((len(first), 0))
        else:
            a = np.stack([condition_column(props, n) for n in self.names], axis=-1)
        return a if rows is None else a[rows]

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """(n, c) transformed conditions from (n, c) physical values (float32)."""
        raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        if raw.shape[-1] != len(self):
            raise ValueError(f"expected {len(self)} condition columns {self.names}, got {raw.shape[-1]}")
        out = [t.transform(raw[:, i]) for i, t in enumerate(self.transforms)]
        return np.stack(out, axis=-1).astype(np.float32) if out else np.zeros((raw.shape[0], 0), np.float32)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        return np.stack([t.inverse_transform(values[:, i]) for i, t in enumerate(self.transforms)], axis=-1)

    def to_list(self) -> list[dict]:
        return [t.to_dict() for t in self.transforms]

    @classmethod
    def from_list(cls, items: list[dict]) -> ConditionSet:
        return cls([PowerTransform(**d) for d in items])


def check_condition_names(names) -> None:
    """Raise for a name outside {logmstar, logsfr, logssfr, metallicity} or a repeat."""
    bad = [n for n in names if n not in CONDITIONS]
    if bad:
        raise ValueError(f"unknown condition(s) {bad}; choose from {CONDITIONS}")
    if len(set(names)) != len(names):
        raise ValueError(f"repeated condition in {list(names)}")


def condition_column(props, name: str) -> np.ndarray:
    """One condition's values (float64) from a table or mapping; ValueError when the column is absent."""
    names = props.colnames if hasattr(props, "colnames") else list(props.keys())
    if name not in names:
        raise ValueError(f"the data have no {name!r} column (was the dataset prepared with --catalog?)")
    return np.asarray(props[name], dtype=np.float64)


def rows_with_conditions(props, names) -> np.ndarray:
    """Boolean (N,) mask: the spectrum has a finite value for every named condition."""
    n = len(props)
    ok = np.ones(n, dtype=bool)
    for name in names:
        ok &= np.isfinite(condition_column(props, name))
    return ok
