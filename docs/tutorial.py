# %% [markdown]
# # galvae in a notebook
#
# From a folder of SDSS spectrum files to latent variables, the number of them the spectra need, what
# they mean, and which of your own spectra the model finds unusual, with the Python API (`galvae.api`).
# Every call returns astropy Tables or NumPy arrays and writes the same artifacts as the command line.
#
# This file runs as a script (`python docs/tutorial.py`) and as a notebook (cells marked `# %%`, e.g.
# with Jupytext or VS Code). It uses a small mock survey, so that it needs no download and takes about
# 37 s of CPU (`/usr/bin/time python docs/tutorial.py`: 34.9 s user + 1.9 s system on a 2-core machine,
# 94 s wall while other jobs shared its cores); with real data, point `SPECTRA` at your folder and
# `CATALOG` at the output of `galvae catalog`. The test suite runs it (`tests/test_tutorial.py`).

# %%
import os
from pathlib import Path

import numpy as np

import galvae
from galvae.sources.mock import make_mock_survey

WORK = Path(os.environ.get("GALVAE_TUTORIAL_DIR", "galvae-tutorial"))
SIZE = dict(n_pix=1000)          # a coarser grid than the default 4000 pixels: quicker for a demo
TRAIN = dict(epochs=8, patience=4)

# A stand-in for your data: 120 bagpipes galaxies observed like SDSS (spec-lite files + GSWLC-2 table).
mock = make_mock_survey(WORK / "mock", n=120, seed=3, workers=1, progress=False)
SPECTRA, CATALOG = WORK / "mock" / "spectra", mock.catalog_path

# %% [markdown]
# ## 1. Read spectra as they were observed
# Every `*.fits` / `*.fits.gz` below the folder is tried; files that are not usable spectra come back
# as rejects, with the reason.

# %%
spectra, rejects = galvae.read_spectra(SPECTRA)
print(f"{len(spectra)} spectra read, {len(rejects)} rejected")
print(spectra["id", "z", "class", "sn_median", "n_good"][:3])
first_flux = spectra["flux"][0]   # a NumPy array, 1e-17 erg/s/cm²/Å, on spectra["wave"][0] (Å)

# %% [markdown]
# ## 2. Prepare: rest frame, common grid, normalisation, gap filling, splits
# `scheduler="sync"` runs in this process; leave it out to use a local Dask cluster.

# %%
data = galvae.prepare_spectra(SPECTRA, WORK / "data.zarr", catalog=CATALOG, scheduler="sync", **SIZE)
counts = data.attrs["counts"]
print(f"kept {counts['kept']} of {counts['files']} files; splits {counts['split']}")

# %% [markdown]
# ## 3. Train a VAE: `fit`, `transform`, `score`
# Parameters go to the constructor, learned things end in `_` (`model_dir_`, `metrics_`, `history_`).

# %%
vae = galvae.SpectrumVAE(latent_dim=2, model_dir=WORK / "vae_d2", **TRAIN).fit(data)
mu = vae.transform(data)                       # (N, 2) posterior means
print("latents:", mu.shape, "| mean test ELBO:", round(vae.score(data), 1), "nats per spectrum")
print("test χ²/pixel:", round(vae.metrics_["chi2_per_pixel"]["mean"], 3))
model_spectra = vae.inverse_transform(mu[:2])  # (2, 1000) decoded spectra

# %% [markdown]
# ## 4. How many latents: the BIC grid
# One row per (d, conditions, seed); `grid.meta["best"]` is the chosen model.

# %%
grid = galvae.select_latents(data, WORK / "select", latent=[1, 2], conditions="none", seeds=1,
                             scheduler="sync", **TRAIN)
best = grid.meta["best"]
print(grid["d", "bic_mean", "chi2_per_pixel"])
print(f"lowest BIC at d = {best['d']}")

# %% [markdown]
# ## 5. What the latents mean
# D1…Dd (rotated latents), mutual information with the catalogue's properties, traversals, SHAP, and
# the most unusual test spectra beside their reconstructions.

# %%
# (On a mock, truth=mock.truth_path also compares the latents with the true parameters.)
result = galvae.explain_latents(vae, data, WORK, n_boot=2, n_background=8, n_explain=4)
print(result.latents["id", "D1", "D2", "outlier_percentile"][:3])
print(result.summary["mutual_information"]["tracks"][0])

# %% [markdown]
# ## 6. Your own spectra
# Raw spec files go through what the training spectra went through, with the training set's gap-filling
# basis; each gets D1…Dd, χ²/pixel, its ELBO, and an outlier score: the ELBO's percentile among the
# training spectra of similar S/N (low = unusual). Here: galaxies from another mock, and a broken file.

# %%
new = make_mock_survey(WORK / "new", n=8, seed=99, workers=1, progress=False)
(WORK / "new" / "spectra" / "not a spectrum.fits").write_text("junk")
table, rejected = vae.encode_spectra(WORK / "new" / "spectra")
print(table["id", "D1", "chi2_per_pixel", "elbo", "outlier_percentile"])
print(rejected["path", "reason"])

# %% [markdown]
# ## 7. The report

# %%
report = galvae.write_report(WORK, data, WORK / "analysis", select_dir=WORK / "select")
print("open", report)
assert np.isfinite(mu).all()
