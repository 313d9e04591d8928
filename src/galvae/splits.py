"""A split's spectra for training and scoring: held on the device, or streamed from the store's chunks.

A :class:`Split` is the rows of one split (train, val or test) that a model uses. When their flux and
ivar fit the memory allowed (``resident_bytes``) they are read once, block by block, into one tensor
on the device; otherwise every pass reads them again from the Zarr store, one window of chunks at a
time, while a background thread reads the next window (I/O overlapped with compute). Memory then
stays at a few windows, whatever the survey's size.

Both ways give the same numbers, because the order of the batches is defined by the store's blocks
(one block = the split's rows in one Zarr chunk), not by where the data sit:

- training (:meth:`Split.epoch_order`): the blocks are shuffled, taken ``window_blocks`` at a time,
  and the rows of each window shuffled together (a shuffle buffer of whole chunks); the epoch's
  batches are consecutive pieces of that order;
- scoring (:meth:`Split.eval_batches`): blocks in store order, each cut into batches.

Every tensor a batch carries (flux, ivar, the ln L constant, conditions) is computed per block the
same way in both modes, so a streamed model equals a resident one bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from . import likelihood as lk
from .prepare.dataset import row_blocks, take_rows

BYTES_PER_VALUE = 8          # float32 flux + float32 ivar per pixel
CPU_RESIDENT_BYTES = 2**29   # default on CPU: a split above 512 MiB of flux + ivar is streamed


class Batch(NamedTuple):
    """One batch: positions into the split, and its tensors on the device."""

    positions: torch.Tensor     # (b,) indices into the split's rows
    flux: torch.Tensor          # (b, P)
    ivar: torch.Tensor          # (b, P), 0 at bad pixels
    ln_norm: torch.Tensor       # (b,) the data-only constant of ln L
    cond: torch.Tensor | None   # (b, c) transformed conditions


def clean(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 flux and ivar, a pixel with non-finite flux or ivar (or ivar ≤ 0) at flux 0 and ivar 0."""
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    ivar = np.where(np.isfinite(ivar) & (ivar > 0) & np.isfinite(flux), ivar, 0).astype(np.float32)
    return np.nan_to_num(flux, nan=0.0, posinf=0.0, neginf=0.0), ivar


def default_resident_bytes(device: torch.device) -> int:
    """How many bytes of flux + ivar a split may keep on ``device``: 512 MiB on CPU, 40 % of the free
    memory of a GPU (the model, its optimizer and the activations need the rest)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.4 * free)
    return CPU_RESIDENT_BYTES


class Split:
    """The rows of one split with what a model needs of them (module docstring).

    Parameters
    ----------
    dataset : a Dataset (its flux and ivar in memory, lazy Zarr arrays or RowViews).
    rows : increasing row indices of the split (rows lacking a needed condition already left out).
    cond : (n, c) transformed conditions of those rows, or None.
    device : where batches are made.
    resident_bytes : keep the split on the device when its flux + ivar take at most this many bytes
        (None: :func:`default_resident_bytes`); 0 always streams.
    """

    def __init__(self, dataset, rows, cond: np.ndarray | None, device, resident_bytes: int | None = None):
        self.flux_src, self.ivar_src = dataset.flux, dataset.ivar
        self.rows = np.asarray(rows, dtype=np.int64)
        self.device = torch.device(device)
        self.n_pix = int(self.flux_src.shape[1])
        self.blocks = row_blocks(self.flux_src, self.rows)
        self.cond = None if cond is None else torch.as_tensor(np.asarray(cond, np.float32), device=self.device)
        budget = default_resident_bytes(self.device) if resident_bytes is None else int(resident_bytes)
        self.resident = len(self.rows) * self.n_pix * BYTES_PER_VALUE <= budget
        self._data = self._read_all() if self.resident else None

    def __len__(self) -> int:
        return len(self.rows)

    # ---- reading ---------------------------------------------------------------------------------

    def _read(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flux, ivar and ln L constant of increasing positions (a block or a window of blocks), on the
        device; read one stored block at a time, so the host's temporaries stay at one block's size."""
        n = len(positions)
        x = torch.empty((n, self.n_pix), dtype=torch.float32, device=self.device)
        w = torch.empty_like(x)
        ln = torch.empty(n, dtype=torch.float32, device=self.device)
        for part in row_blocks(self.flux_src, self.rows[positions]):
            rows = self.rows[positions[part]]
            flux, ivar = clean(take_rows(self.flux_src, rows), take_rows(self.ivar_src, rows))
            sl = slice(int(part[0]), int(part[-1]) + 1)
            x[sl], w[sl] = torch.from_numpy(flux), torch.from_numpy(ivar)
            ln[sl] = lk.ln_likelihood_constant(w[sl])
        return x, w, ln

    def _read_all(self):
        n = len(self.rows)
        x = torch.empty((n, self.n_pix), dtype=torch.float32, device=self.device)
        w = torch.empty_like(x)
        ln = torch.empty(n, dtype=torch.float32, device=self.device)
        for pos in self.blocks:  # block by block: the host never holds more than one block
            sl = slice(int(pos[0]), int(pos[-1]) + 1)
            x[sl], w[sl], ln[sl] = self._read(pos)
        return x, w, ln

    def _cond(self, positions: torch.Tensor):
        return None if self.cond is None else self.cond[positions]

    def _windows(self, groups: list[np.ndarray]) -> Iterator[tuple[np.ndarray, tuple]]:
        """(positions, tensors) of each group of increasing positions, in order; when streaming, the
        next group is read by a background thread while this one is used."""
        if self.resident:  # groups here are blocks: consecutive positions, so slices of the tensors
            for pos in groups:
                yield pos, tuple(t[int(pos[0]):int(pos[-1]) + 1] for t in self._data)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="galvae-read") as pool:
            ahead = pool.submit(self._read, groups[0]) if groups else None
            for k, pos in enumerate(groups):
                data = ahead.result()
                ahead = pool.submit(self._read, groups[k + 1]) if k + 1 < len(groups) else None
                yield pos, data

    # ---- passes ----------------------------------------------------------------------------------

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches in store order, each block cut into pieces of at most ``batch_size``."""
        for pos, (x, w, ln) in self._windows(self.blocks):
            p = torch.from_numpy(pos).to(self.device)
            for s in range(0, len(pos), batch_size):
                sl = slice(s, s + batch_size)
                yield Batch(p[sl], x[sl], w[sl], ln[sl], self._cond(p[sl]))

    def epoch_order(self, gen: torch.Generator, window_blocks: int) -> list[np.ndarray]:
        """One epoch's shuffled positions, as windows: ``window_blocks`` shuffled blocks at a time, the
        rows of each window shuffled together. Draws from ``gen`` only (CPU generator)."""
        block_order = torch.randperm(len(self.blocks), generator=gen).numpy()
        windows = []
        for start in range(0, len(block_order), window_blocks):
            pos = np.concatenate([self.blocks[b] for b in block_order[start:start + window_blocks]])
            windows.append(pos[torch.randperm(len(pos), generator=gen).numpy()])
        return windows

    def train_batches(self, windows: list[np.ndarray], n_batches: int) -> Iterator[Batch]:
        """The epoch's batches: its order (the windows joined) cut into ``n_batches`` near-equal pieces.
        Streaming holds at most the windows a batch spans, plus the one being read."""
        order = np.concatenate(windows) if windows else np.zeros(0, np.int64)
        cuts = np.linspace(0, len(order), n_batches + 1).round().astype(np.int64)
        if self.resident:
            for b in range(n_batches):
                p = torch.from_numpy(order[cuts[b]:cuts[b + 1]]).to(self.device)
                yield Batch(p, *(t[p] for t in self._data), self._cond(p))
            return
        which = np.empty(len(self.rows), np.int64)
        for k, w in enumerate(windows):
            which[w] = k
        loaded = self._windows([np.sort(w) for w in windows])  # each window read in store order
        held: dict[int, tuple] = {}  # window → (its sorted positions, its tensors)
        try:
            for b in range(n_batches):
                pos = order[cuts[b]:cuts[b + 1]]
                needed = np.unique(which[pos])
                while len(held) == 0 or max(held) < needed.max():
                    k = max(held) + 1 if held else 0
                    held[k] = next(loaded)
                for k in [k for k in held if k < needed.min()]:
                    del held[k]
                x = torch.empty((len(pos), self.n_pix), dtype=torch.float32, device=self.device)
                w = torch.empty_like(x)
                ln = torch.empty(len(pos), dtype=torch.float32, device=self.device)
                for k in needed:
                    sorted_pos, (xk, wk, lnk) = held[k]
                    mine = np.flatnonzero(which[pos] == k)
                    local = torch.from_numpy(np.searchsorted(sorted_pos, pos[mine])).to(self.device)
                    dest = torch.from_numpy(mine).to(self.device)
                    x[dest], w[dest], ln[dest] = xk[local], wk[local], lnk[local]
                p = torch.from_numpy(pos).to(self.device)
                yield Batch(p, x, w, ln, self._cond(p))
        finally:
            loaded.close()

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel mean and standard deviation (ddof = 1) of the flux, accumulated in float64."""
        total = torch.zeros(self.n_pix, dtype=torch.float64, device=self.device)
        squares = torch.zeros_like(total)
        for _, (x, _, _) in self._windows(self.blocks):
            total += x.double().sum(0)
            squares += (x.double() ** 2).sum(0)
        n = max(len(self.rows), 1)
        mean = total / n
        var = (squares - n * mean**2) / max(n - 1, 1)
        return mean.float(), var.clamp_min(0).sqrt().float()


def n_batches(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
