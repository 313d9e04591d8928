"""The VAE and CVAE, top to bottom: configuration, the two architectures, the model, the loss.

Spectra go in as (batch, P) tensors of normalised flux; optional conditions as (batch, c) tensors,
already transformed (see :mod:`galvae.models.conditions`). Every size below follows from the
configuration and P; nothing is hard-coded for P = 4000.

Architectures
-------------
``paper``   Iwasaki, Cooray & Takeuchi (Fig. 7 and the authors' code): a 4-block Conv1d encoder and a
            ConvTranspose1d decoder, with three big Linear layers (≈ 49 M parameters at P = 4000).
``compact`` galvae's own: an MLP encoder and decoder (512 → 128 → d and back), in the manner of
            Portillo et al. (2020) and spender's decoder, that read and write spectra through K fixed
            eigenspectra (``n_basis``, default 32) of the training split's ivar-weighted PCA: the
            encoder sees the spectrum's K projections, the decoder writes K coefficients, and a free
            per-pixel offset is added. The eigenspectra are not trained, so the network cannot spend
            4000-wide layers memorising the training spectra's noise: on a 5000-galaxy mock this lowered
            the held-out χ²/pixel at d = 4 from 1.094 to 1.069 and at d = 12 from 1.059 to 1.020
            (noise floor 1.006), and made an epoch ~5× cheaper (docs/vae_vs_pca.md): 0.17 M trained
            parameters. ``n_basis = 0`` gives the plain MLP on pixels (P → 512 → …; 4.2 M parameters at
            P = 4000, against 49 M for ``paper``).

Both standardise each pixel with the training split's mean and std (buffers ``shift`` and ``scale``)
before the encoder, and undo it after the decoder, so training starts from "predict the mean spectrum".

A CVAE (n_conditions > 0) appends its conditions to the encoder's features before the μ and ln σ²
heads, and to z before the decoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from itertools import pairwise

import numpy as np
import torch
from torch import nn

from .. import likelihood as lk

ARCHITECTURES = ("paper", "compact")
LOSSES = ("gaussian", "mse", "authors")
# The objective of the authors' code (the paper states neither weight): per spectrum
# 1e3 × MSE over pixels + 0.1 × KL averaged (not summed) over the latent dimensions.
AUTHORS_MSE_WEIGHT = 1e3
AUTHORS_KL_WEIGHT = 0.1


@dataclass
class ModelConfig:
    """Everything needed to rebuild a VAE's modules (stored in the model's config.json)."""

    arch: str = "compact"            # 'paper' or 'compact'
    n_pix: int = 4000                # P, pixels per spectrum
    latent_dim: int = 4              # d
    n_conditions: int = 0            # c; 0 is a plain VAE
    dropout: float = 0.0             # paper: after each encoder conv block; compact: after each hidden layer
    hidden: tuple = (512, 128)       # compact: MLP widths, encoder order (the decoder mirrors them)
    n_basis: int = 0                 # compact: K eigenspectra the MLPs read and write through (0: pixels)
    train_offset: bool = True        # compact with eigenspectra: train the per-pixel offset (False: it stays
                                     # the training mean, and training can run on galvae.basis_split statistics)
    negative_slope: float = 0.01     # LeakyReLU slope, as in the paper

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if self.arch == "paper" and self.n_pix < 64:
            raise ValueError(f"the paper architecture needs at least 64 pixels, got {self.n_pix}")
        if self.arch == "paper" and self.n_basis:
            raise ValueError("n_basis is an option of the compact architecture only")
        if self.latent_dim < 1 or self.n_conditions < 0:
            raise ValueError(f"latent_dim must be ≥ 1 and n_conditions ≥ 0, got {self.latent_dim}, {self.n_conditions}")
        if not self.train_offset and not (self.arch == "compact" and self.n_basis):
            raise ValueError("a fixed offset (train_offset=False) needs a compact model with eigenspectra (n_basis > 0)")
        if not 0 <= self.n_basis <= self.n_pix:
            raise ValueError(f"n_basis must be between 0 and n_pix = {self.n_pix}, got {self.n_basis}")
        self.hidden = tuple(int(h) for h in self.hidden)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # a missing n_basis: a pixel-space model


# ---------------------------------------------------------------------------------------------------
# sizes
# ---------------------------------------------------------------------------------------------------

def conv_length(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of Conv1d / MaxPool1d."""
    return (n + 2 * padding - kernel) // stride + 1


def conv_transpose_length(n: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0) -> int:
    """Output length of ConvTranspose1d."""
    return (n - 1) * stride - 2 * padding + kernel + output_padding


PAPER_CHANNELS = (1, 8, 16, 32, 64)
PAPER_FEATURES = 1024


def paper_encoder_length(n_pix: int) -> int:
    """Length of the paper encoder's last feature map: 4 × (conv k5 p1, then max-pool 2)."""
    n = n_pix
    for _ in PAPER_CHANNELS[1:]:
        n = conv_length(n, 5, 1, 1) // 2
    return n


def paper_decoder_length(n_pix: int) -> int:
    """Length after the paper decoder's convolutions, before its final Linear(→ P)."""
    n = n_pix // 16
    for _ in range(3):
        n = conv_transpose_length(n, 5, 2, 1, 1)
    return conv_transpose_length(n, 3, 2, 1, 1)  # the last Conv1d(k3, p1) keeps the length


# ---------------------------------------------------------------------------------------------------
# architecture `paper`
# ---------------------------------------------------------------------------------------------------

class PaperEncoder(nn.Module):
    """4 × [Conv1d(k5, s1, p1) → BatchNorm1d → LeakyReLU → Dropout → MaxPool1d(2)], Flatten, Linear(→1024)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.negative_slope
        blocks = []
        for c_in, c_out in pairwise(PAPER_CHANNELS):
            blocks += [nn.Conv1d(c_in, c_out, 5, stride=1, padding=1), nn.BatchNorm1d(c_out), nn.LeakyReLU(a),
                       nn.Dropout(cfg.dropout), nn.MaxPool1d(2)]
        self.convs = nn.Sequential(*blocks, nn.Flatten())
        n_flat = PAPER_CHANNELS[-1] * paper_encoder_length(cfg.n_pix)
        self.fc = nn.Sequential(nn.Linear(n_flat, PAPER_FEATURES), nn.LeakyReLU(a))
        self.n_features = PAPER_FEATURES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x.unsqueeze(1)))


class PaperDecoder(nn.Module):
    """Linear(→1024) → Linear(→64 × P/16), 3 × [ConvTranspose1d(k5, s2) → BN → LeakyReLU],
    ConvTranspose1d(k3, s2) → BN → LeakyReLU, Conv1d(8 → 1, k3), Linear(→ P)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.negative_slope
        n0 = cfg.n_pix // 16
        ch = PAPER_CHANNELS[::-1]  # 64, 32, 16, 8, 1
        self.fc = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.n_conditions, PAPER_FEATURES), nn.LeakyReLU(a),
            nn.Linear(PAPER_FEATURES, ch[0] * n0), nn.LeakyReLU(a),
            nn.Unflatten(1, (ch[0], n0)),
        )
        blocks = []
        for c_in, c_out in pairwise(ch[:4]):
            blocks += [nn.ConvTranspose1d(c_in, c_out, 5, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm1d(c_out), nn.LeakyReLU(a)]
        blocks += [nn.ConvTranspose1d(ch[3], ch[3], 3, stride=2, padding=1, output_padding=1),
                   nn.BatchNorm1d(ch[3]), nn.LeakyReLU(a),
                   nn.Conv1d(ch[3], 1, 3, padding=1), nn.Flatten()]
        self.convs = nn.Sequential(*blocks)
        self.out = nn.Linear(paper_decoder_length(cfg.n_pix), cfg.n_pix)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(self.fc(z)))


# ---------------------------------------------------------------------------------------------------
# architecture `compact`
# ---------------------------------------------------------------------------------------------------

def mlp(widths, negative_slope: float, dropout: float, last_activation: bool) -> nn.Sequential:
    """Linear layers of the given widths with LeakyReLU (and Dropout) between them."""
    layers = []
    for i, (n_in, n_out) in enumerate(pairwise(widths)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2 or last_activation:
            layers.append(nn.LeakyReLU(negative_slope))
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def frozen_linear(n_in: int, n_out: int, train_bias: bool) -> nn.Linear:
    """A Linear whose weight (and bias, unless ``train_bias``) is set from data, never trained."""
    layer = nn.Linear(n_in, n_out)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(train_bias)
    return layer


class CompactEncoder(nn.Module):
    """[P → K projections on the eigenspectra, frozen] → hidden[0] → … → hidden[-1], LeakyReLU after each."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.project = frozen_linear(cfg.n_pix, cfg.n_basis, train_bias=False) if cfg.n_basis else nn.Identity()
        n_in = cfg.n_basis or cfg.n_pix
        self.net = mlp((n_in, *cfg.hidden), cfg.negative_slope, cfg.dropout, last_activation=True)
        self.n_features = cfg.hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(x))


class CompactDecoder(nn.Module):
    """d (+c) → hidden[-1] → … → hidden[0] → P (or → K coefficients → P through the frozen eigenspectra,
    plus a trained per-pixel offset); linear output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = (cfg.latent_dim + cfg.n_conditions, *cfg.hidden[::-1], cfg.n_basis or cfg.n_pix)
        self.net = mlp(widths, cfg.negative_slope, cfg.dropout, last_activation=False)
        self.expand = (frozen_linear(cfg.n_basis, cfg.n_pix, train_bias=cfg.train_offset) if cfg.n_basis
                       else nn.Identity())

    @property
    def out(self) -> nn.Linear:
        """The last Linear (→ P), named like the paper decoder's."""
        return self.expand if isinstance(self.expand, nn.Linear) else self.net[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.expand(self.net(z))


# ---------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------

ENCODERS = {"paper": PaperEncoder, "compact": CompactEncoder}
DECODERS = {"paper": PaperDecoder, "compact": CompactDecoder}
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(ln σ²) finite in float32 and bf16


class VAE(nn.Module):
    """Variational autoencoder (a CVAE when ``cfg.n_conditions > 0``) for (batch, P) spectra."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ENCODERS[cfg.arch](cfg)
        n_feat = self.encoder.n_features + cfg.n_conditions
        self.mu_head = nn.Linear(n_feat, cfg.latent_dim)
        self.logvar_head = nn.Linear(n_feat, cfg.latent_dim)
        self.decoder = DECODERS[cfg.arch](cfg)
        # per-pixel standardisation of the data, set from the training split (set_data_scaling): the
        # networks see and predict (x − shift) / scale, so every pixel starts on the same footing
        self.register_buffer("shift", torch.zeros(cfg.n_pix))
        self.register_buffer("scale", torch.ones(cfg.n_pix))

    def _with_conditions(self, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.n_conditions == 0:
            return h
        if cond is None or cond.shape[-1] != self.cfg.n_conditions:
            raise ValueError(f"this CVAE needs {self.cfg.n_conditions} conditions per spectrum")
        return torch.cat([h, cond.to(h.dtype)], dim=-1)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean μ and ln σ², each (batch, d)."""
        return self._posterior(self.encoder((x - self.shift) / self.scale), cond)

    def encode_projections(self, p: torch.Tensor, cond: torch.Tensor | None = None):
        """:meth:`encode` from the K projections that a compact encoder's frozen first layer makes of x
        (``encoder.project``), for training on a split's basis statistics (galvae.basis_split)."""
        return self._posterior(self.encoder.net(p), cond)

    def _posterior(self, h: torch.Tensor, cond):
        h = self._with_conditions(h, cond)
        return self.mu_head(h), self.logvar_head(h).clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstructed spectra (batch, P) from latents (batch, d)."""
        return self.shift + self.scale * self.decoder(self._with_conditions(z, cond))

    def forward(self, x, cond=None, generator: torch.Generator | None = None):
        """One reparameterised pass: (x̂ from a sample z, μ, ln σ²)."""
        mu, logvar = self.encode(x, cond)
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z, cond), mu, logvar

    @torch.no_grad()
    def set_data_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise with the training split's per-pixel mean and std (flux units); with the decoder's
        last bias at zero, training starts from 'predict the mean spectrum'."""
        self.shift.copy_(mean)
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        self.decoder.out.bias.zero_()

    @torch.no_grad()
    def set_basis(self, mean: torch.Tensor, components: torch.Tensor, coeff_std: torch.Tensor) -> None:
        """Install the K eigenspectra (``components`` (K, P), orthonormal, flux units, about ``mean``)
        in a compact model with ``n_basis = K``; call after :meth:`set_data_scaling`. The encoder's
        inputs and the decoder's outputs are the coefficients divided by ``coeff_std`` (their spread
        over the training split), so the MLPs work with numbers of order one."""
        if self.cfg.arch != "compact" or not self.cfg.n_basis:
            raise ValueError("set_basis needs a compact model with n_basis > 0")
        k = self.cfg.n_basis
        if components.shape != (k, self.cfg.n_pix):
            raise ValueError(f"expected ({k}, {self.cfg.n_pix}) eigenspectra, got {tuple(components.shape)}")
        std = torch.where(coeff_std > 0, coeff_std, torch.ones_like(coeff_std))
        # encoder: standardised x → ((x − mean) · e_k) / std_k
        self.encoder.project.weight.copy_(components * self.scale / std[:, None])
        self.encoder.project.bias.copy_(((self.shift - mean) @ components.T) / std)
        # decoder: u → (mean + Σ_k u_k std_k e_k − shift) / scale, the offset then trained
        self.decoder.expand.weight.copy_((std[:, None] * components / self.scale).T)
        self.decoder.expand.bias.copy_((mean - self.shift) / self.scale)


    def output_basis(self):
        """For a compact model with eigenspectra, the decoder's linear end: ``(coefficients, basis, offset)``
        with ``decode(z, c) == offset + coefficients(z, c) @ basis`` (``basis`` (K, P)), so that a fit of z
        can work in the K coefficients instead of the P pixels; None for other models."""
        if self.cfg.arch != "compact" or not self.cfg.n_basis:
            return None
        expand = self.decoder.expand
        basis = expand.weight.T * self.scale          # (K, P)
        offset = self.shift + self.scale * expand.bias

        def coefficients(z, cond=None):
            return self.decoder.net(self._with_conditions(z, cond))

        return coefficients, basis, offset


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------------

def reconstruction_loss(flux, model, ivar, kind: str = "gaussian", ln_norm=None) -> torch.Tensor:
    """Per-spectrum reconstruction loss: −ln L with ivar ('gaussian'), the paper's MSE ('mse'), or the
    authors' code's 1e3 × MSE ('authors')."""
    if kind == "gaussian":
        return -lk.ln_likelihood(flux, model, ivar, constant=ln_norm)
    if kind == "mse":
        return lk.mse(flux, model)
    if kind == "authors":
        return AUTHORS_MSE_WEIGHT * lk.mse(flux, model)
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def kl_term(mu, logvar, kind: str = "gaussian", beta: float = 1.0):
    """Per-spectrum KL term of the loss: β KL summed over latent dimensions, or, for 'authors',
    0.1 × KL averaged over them (β must then stay 1: the authors' weights are fixed)."""
    kl = lk.kl_divergence(mu, logvar)
    if kind != "authors":
        return beta * kl
    if beta != 1.0:
        raise ValueError(f"the 'authors' objective fixes its KL weight (0.1, averaged over dimensions); "
                         f"beta must be 1, got {beta}")
    return AUTHORS_KL_WEIGHT * kl / mu.shape[-1]


def vae_loss(flux, ivar, model_flux, mu, logvar, kind: str = "gaussian", beta: float = 1.0, ln_norm=None):
    """Per-spectrum training loss: reconstruction + KL term (for 'gaussian', the negative β-ELBO in nats;
    for 'authors', 1e3 · mean_p (x − x̂)² + 0.1 · mean_j KL_j, the objective of the authors' code)."""
    return reconstruction_loss(flux, model_flux, ivar, kind, ln_norm) + kl_term(mu, logvar, kind, beta)


# ---------------------------------------------------------------------------------------------------
# scoring held-out spectra
# ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def score(model: VAE, flux, ivar, cond=None, ln_norm=None, kind: str = "gaussian", beta: float = 1.0,
          n_samples: int = 1, seed: int = 0, batch_size: int = 1024, autocast_dtype=None) -> dict:
    """Per-spectrum numbers on (N, P) tensors, in eval mode, batch by batch. Returns float64 NumPy arrays:

    ``loss``            the training loss (``kind``, ``beta``), first MC sample
    ``ln_likelihood``   Gaussian ln L at the posterior mean (nats)
    ``chi2_per_pixel``  at the posterior mean, over good pixels
    ``kl``              KL(q ‖ N(0, I)), nats
    ``elbo``            E_q[ln L] − KL with the Gaussian likelihood, β = 1, ``n_samples`` MC samples
    ``n_good``          good pixels
    ``mu``, ``sigma``   posterior means and standard deviations (N, d)

    Sampling uses its own generator seeded with ``seed``, so scores are reproducible and training's
    random state is untouched. :func:`score_batches` does the same over any sequence of batches.
    """
    def batches():
        for start in range(0, flux.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            yield (flux[sl], ivar[sl], None if cond is None else cond[sl],
                   lk.ln_likelihood_constant(ivar[sl]) if ln_norm is None else ln_norm[sl])

    return score_batches(model, batches(), kind, beta, n_samples, seed, autocast_dtype)


@torch.no_grad()
def score_batches(model: VAE, batches, kind: str = "gaussian", beta: float = 1.0, n_samples: int = 1,
                  seed: int = 0, autocast_dtype=None, n: int | None = None) -> dict:
    """:func:`score` over batches of (flux, ivar, cond or None, ln L constant), e.g. a streamed split's.

    ``n``: the number of spectra the batches hold, when known: the results are then written into arrays
    made at the start, instead of many small pieces that would be made between the big temporaries of
    every batch and fragment the heap over a long pass."""
    was_training = model.training
    model.eval()
    gen = None
    names = ("loss", "ln_likelihood", "chi2_per_pixel", "kl", "elbo", "n_good", "mu", "sigma")
    out = {k: [] for k in names}
    filled = 0
    for x, w, c, const in batches:
        dev = x.device
        if gen is None:
            gen = torch.Generator(device=dev).manual_seed(seed)
        with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            mu, logvar = model.encode(x, c)
            mean_model = model.decode(mu, c)
        mu, logvar, mean_model = mu.float(), logvar.float(), mean_model.float()
        kl = lk.kl_divergence(mu, logvar)
        expected = torch.zeros_like(kl)
        for s in range(max(n_samples, 1)):
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, device=dev, generator=gen)
            with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                sample_model = model.decode(z, c).float()
            expected += lk.ln_likelihood(x, sample_model, w, constant=const)
            if s == 0:
                loss = reconstruction_loss(x, sample_model, w, kind, const) + kl_term(mu, logvar, kind, beta)
            del sample_model
        row = {"loss": loss, "ln_likelihood": lk.ln_likelihood(x, mean_model, w, constant=const),
               "chi2_per_pixel": lk.chi2_per_pixel(x, mean_model, w), "kl": kl,
               "elbo": lk.elbo(expected / max(n_samples, 1), kl), "n_good": lk.n_good(w), "mu": mu,
               "sigma": torch.exp(0.5 * logvar)}
        del mean_model
        if n is None:
            for k in names:
                out[k].append(row[k])
            continue
        if filled == 0:
            out = {k: np.empty((n, *row[k].shape[1:]), np.float64) for k in names}
        for k in names:
            out[k][filled:filled + len(x)] = row[k].double().cpu().numpy()
        filled += len(x)
    model.train(was_training)
    if n is not None:
        if filled != n:
            raise ValueError(f"score_batches: told {n} spectra, got {filled}")
        return out if filled else {k: None for k in names}
    return {k: torch.cat(v).double().cpu().numpy() if v else None for k, v in out.items()}
