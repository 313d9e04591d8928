"""The configuration of a whole run (`galvae run`): dataclasses, presets, YAML.

Two presets:

- ``demo`` (default): sized so that mock → prepare → select → explain → report finishes in minutes on
  a 2-core laptop: a 2500-galaxy mock, the ``compact`` architecture, d = 1–6 × {VAE, CVAE(M*),
  CVAE(SFR)} × 2 seeds with 15 epochs of training per cell (an epoch budget, not a time limit, so
  that the same command gives the same models and the same choice on any machine, at any load).
- ``paper``: the paper's set-up for GPUs: the ``paper`` architecture, d = 1–8 × all 16 condition
  subsets × 3 seeds, full-length training (``examples/paper-tiny.yaml``: the same grid of conditions
  at CPU size).

A YAML file given with ``--config`` overrides any field of a preset, section by section
(``mock:``, ``prepare:``, ``select:``, ``explain:``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .prepare.pipeline import PrepareConfig

_PREPARE = PrepareConfig()  # prepare's defaults live in PrepareConfig alone


@dataclass
class MockSection:
    n: int = 2500
    seed: int = 0
    vary: str | None = None


@dataclass
class PrepareSection:
    """The fields of :class:`PrepareConfig` a run configuration may set; the others keep their defaults."""

    zmax: float = _PREPARE.zmax
    n_pix: int = _PREPARE.n_pix
    wave_min: float = _PREPARE.wave_min
    wave_max: float = _PREPARE.wave_max
    max_bad_fraction: float = _PREPARE.max_bad_fraction
    n_components: int = _PREPARE.n_components
    n_iter: int = _PREPARE.n_iter

    def to_config(self) -> PrepareConfig:
        return replace(_PREPARE, **asdict(self))


@dataclass
class SelectSection:
    latent: str = "1-6"
    conditions: str = "none,logmstar,logsfr"
    seeds: int = 2
    arch: str = "compact"
    epochs: int = 15
    patience: int = 6
    time_limit: float | None = None     # seconds of training per cell; None: the epoch budget alone
    refine_steps: int | None = None     # latent refinement for BIC's maximised likelihood; None: the default
    warm_start: bool = False            # each d starts from the trained d - 1 model (big surveys)
    fixed_offset: bool = False          # compact: offset fixed at the mean, training on basis statistics


@dataclass
class ExplainSection:
    n_boot: int = 20
    shap_background: int = 64
    shap_explain: int = 64


@dataclass
class RunConfig:
    preset: str = "demo"
    source: str = "mock"                # 'mock' or 'sdss'
    spectra: str | None = None          # folder of spec files (source sdss)
    catalog: str | None = None          # GSWLC-2 / specObj catalogue (source sdss)
    dataset: str | None = None          # a prepared dataset.zarr: skip source and prepare
    workers: int | None = None          # Dask workers (default: one per core)
    scheduler: str | None = None        # address of a running Dask scheduler
    cluster: str = "local"              # 'local' or 'slurm'
    listen: str = "127.0.0.1"           # address the Dask servers bind (docs/cluster_safety.md)
    mock: MockSection = field(default_factory=MockSection)
    prepare: PrepareSection = field(default_factory=PrepareSection)
    select: SelectSection = field(default_factory=SelectSection)
    explain: ExplainSection = field(default_factory=ExplainSection)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


PRESETS = {
    "demo": RunConfig(),
    "paper": RunConfig(
        preset="paper",
        mock=MockSection(n=20000),
        select=SelectSection(latent="1-8", conditions="all", seeds=3, arch="paper", epochs=100, patience=10,
                             time_limit=None),
        explain=ExplainSection(n_boot=50, shap_background=200, shap_explain=500),
    ),
}

_SECTIONS = {"mock": MockSection, "prepare": PrepareSection, "select": SelectSection, "explain": ExplainSection}


def load_config(preset: str = "demo", yaml_path: str | Path | None = None, **overrides) -> RunConfig:
    """A preset, updated by a YAML file and then by keyword overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    updates: dict = {}
    if yaml_path:
        import yaml

        with open(yaml_path) as fh:
            updates = yaml.safe_load(fh) or {}
        if not isinstance(updates, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of settings")
    updates.update({k: v for k, v in overrides.items() if v is not None})
    return _apply(cfg, updates, str(yaml_path or "overrides"))


def _apply(cfg: RunConfig, updates: dict, where: str) -> RunConfig:
    top = {f.name for f in fields(RunConfig)}
    changes = {}
    for key, value in updates.items():
        if key not in top:
            raise ValueError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(top))}")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key!r} must be a mapping")
            section = getattr(cfg, key)
            known = {f.name for f in fields(section)}
            bad = set(value) - known
            if bad:
                raise ValueError(f"{where}: unknown {key} setting(s) {sorted(bad)}; known: {sorted(known)}")
            changes[key] = replace(section, **value)
        else:
            changes[key] = value
    return replace(cfg, **changes)
