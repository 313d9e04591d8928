"""Models with one encode/decode API: the VAE/CVAE (:mod:`.vae`) and the PCA baselines (:mod:`.pca`).

A model directory (docs/design.md §2) holds ``config.json`` and the weights: ``model.safetensors`` when the
``safetensors`` package is importable, else ``weights.pt`` (a state dict read back with
``torch.load(weights_only=True)``), or ``pca.npz`` for PCA. :func:`load_model` reads any of them and
never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .conditions import CONDITIONS, ConditionSet
from .pca import PCA

__all__ = [
    "CONDITIONS",
    "PCA",
    "ConditionSet",
    "TrainedVAE",
    "load_model",
    "load_weights",
    "save_weights",
    "weights_path",
]

SAFETENSORS_NAME = "model.safetensors"
TORCH_NAME = "weights.pt"


def _have_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def save_weights(model_dir, state_dict: dict) -> Path:
    """Write a state dict atomically as model.safetensors (if available) or weights.pt; returns the path."""
    import torch

    d = Path(model_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    from .._atomic import atomic_write

    if _have_safetensors():
        from safetensors.torch import save_file

        return atomic_write(d / SAFETENSORS_NAME, lambda tmp: save_file(tensors, str(tmp)))
    return atomic_write(d / TORCH_NAME, lambda tmp: torch.save(tensors, tmp))


def weights_path(model_dir) -> Path:
    """The weights file of a VAE model directory."""
    d = Path(model_dir)
    for name in (SAFETENSORS_NAME, TORCH_NAME):
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(f"no {SAFETENSORS_NAME} or {TORCH_NAME} in {d}")


def load_weights(path) -> dict:
    """A state dict from model.safetensors or weights.pt, without unpickling arbitrary objects."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        read = lambda: load_file(str(path))  # noqa: E731
    else:
        read = lambda: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    try:
        return read()
    except Exception as exc:  # truncated or overwritten weights: an error naming the file, never a guess
        from .._jsonio import damaged

        raise damaged(path, exc, f"Train the model again: rerun the command that wrote {Path(path).parent} "
                      "(galvae train --overwrite, or galvae select after deleting that cell's folder)") from exc


class TrainedVAE:
    """A trained VAE/CVAE with NumPy in and out: what :func:`load_model` returns for a VAE directory.

    ``conditions`` arguments take physical values (e.g. log M*/M☉), as an (N, c) array in the order of
    ``condition_names`` or a table/mapping with those columns; the stored Yeo–Johnson transforms are
    applied here.
    """

    def __init__(self, module, config: dict, conditions: ConditionSet, device="cpu"):
        self.module = module.to(device).eval()
        self.config = config
        self.conditions = conditions
        self.device = device

    @property
    def latent_dim(self) -> int:
        return self.module.cfg.latent_dim

    @property
    def n_pix(self) -> int:
        return self.module.cfg.n_pix

    @property
    def condition_names(self) -> tuple[str, ...]:
        return self.conditions.names

    def _tensor(self, a):
        import torch

        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=self.device)

    def condition_tensor(self, conditions, n: int):
        """Transformed conditions as a tensor (n, c), or None for a plain VAE."""
        if not len(self.conditions):
            return None
        if conditions is None:
            raise ValueError(f"this CVAE needs conditions {self.condition_names}")
        raw = (self.conditions.raw_values(conditions) if hasattr(conditions, "keys") or hasattr(conditions, "colnames")
               else np.asarray(conditions, dtype=float).reshape(n, -1))
        t = self.conditions.transform(raw)
        if not np.all(np.isfinite(t)):
            raise ValueError("conditions must be finite for every spectrum")
        return self._tensor(t)

    def _flux_ivar(self, flux, ivar):
        x = np.atleast_2d(np.asarray(flux, dtype=np.float32))
        if x.shape[-1] != self.n_pix:
            raise ValueError(f"spectra have {x.shape[-1]} pixels; this model expects {self.n_pix}")
        w = np.ones_like(x) if ivar is None else np.atleast_2d(np.asarray(ivar, dtype=np.float32))
        # as in training: a pixel with non-finite flux or ivar counts for nothing and reads as 0
        w = np.where(np.isfinite(w) & (w > 0) & np.isfinite(x), w, 0).astype(np.float32)
        return self._tensor(np.where(np.isfinite(x), x, 0).astype(np.float32)), self._tensor(w)

    def score(self, flux, ivar=None, conditions=None, n_samples: int = 8, seed: int = 0, batch_size: int = 1024):
        """Per-spectrum mu, sigma, ln L, χ²/pixel, KL, ELBO, n_good (see :func:`galvae.models.vae.score`)."""
        from .vae import score

        x, w = self._flux_ivar(flux, ivar)
        c = self.condition_tensor(conditions, x.shape[0])
        return score(self.module, x, w, c, n_samples=n_samples, seed=seed, batch_size=batch_size)

    def encode(self, flux, ivar=None, conditions=None, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and standard deviations, each (N, d). ``ivar`` is not used by the VAE encoders."""
        import torch

        x, _ = self._flux_ivar(flux, None)
        c = self.condition_tensor(conditions, x.shape[0])
        mus, sigmas = [], []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                mu, logvar = self.module.encode(x[s:s + batch_size], None if c is None else c[s:s + batch_size])
                mus.append(mu)
                sigmas.append(torch.exp(0.5 * logvar))
        return torch.cat(mus).cpu().numpy(), torch.cat(sigmas).cpu().numpy()

    transform = encode

    def decode(self, z, conditions=None, batch_size: int = 1024) -> np.ndarray:
        """Spectra (N, P) from latents (N, d)."""
        import torch

        zt = self._tensor(np.atleast_2d(z))
        c = self.condition_tensor(conditions, zt.shape[0])
        with torch.no_grad():
            out = [self.module.decode(zt[s:s + batch_size], None if c is None else c[s:s + batch_size])
                   for s in range(0, zt.shape[0], batch_size)]
        return torch.cat(out).cpu().numpy()

    inverse_transform = decode

    def reconstruct(self, flux, ivar=None, conditions=None) -> np.ndarray:
        """decode(posterior mean): the model spectrum of each input."""
        return self.decode(self.encode(flux, ivar, conditions)[0], conditions)


def load_vae(model_dir, device="cpu") -> TrainedVAE:
    """A :class:`TrainedVAE` from a model directory written by :func:`galvae.fit.fit`."""
    from .vae import VAE, ModelConfig

    d = Path(model_dir)
    config = json.loads((d / "config.json").read_text())
    module = VAE(ModelConfig.from_dict(config["model"]))
    module.load_state_dict(load_weights(weights_path(d)))
    return TrainedVAE(module, config, ConditionSet.from_list(config.get("conditions", [])), device)


def load_model(model_dir, device="cpu"):
    """Load any model directory: a :class:`TrainedVAE` or a fitted :class:`PCA`."""
    d = Path(model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"no model at {d} (config.json missing)")
    kind = json.loads(cfg_path.read_text()).get("kind")
    if kind == "vae":
        return load_vae(d, device)
    if kind == "pca":
        return PCA.load(d)
    raise ValueError(f"{cfg_path}: unknown model kind {kind!r}")
