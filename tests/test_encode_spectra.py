"""`galvae encode --spectra`: raw spec files through a trained model, prepared as its training set was."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from galvae.explain.external import REFERENCE, encode_spectra, outlier_percentile, sn_bin_edges
from galvae.fit import encode_dataset, fit
from galvae.prepare import PrepareConfig, open_dataset, prepare_dataset


@pytest.fixture(scope="module")
def trained(small_mock, tmp_path_factory):
    """A dataset of the 60-galaxy mock on a 1000-pixel grid and a d = 2 VAE trained on it."""
    work = tmp_path_factory.mktemp("encode_spectra")
    data = work / "data.zarr"
    prepare_dataset(small_mock.paths, data, catalog=small_mock.catalog_path, scheduler="sync", progress=False,
                    config=PrepareConfig(n_pix=1000, rows_per_chunk=16))
    model = fit(open_dataset(data, load=False), work / "vae", latent_dim=2, epochs=4, progress=False)
    return small_mock, data, model, work


def test_training_files_encode_as_in_the_dataset(trained):
    """The same files give the same spectra, hence the same latents and ELBO, as through prepare."""
    mock, data, model, _ = trained
    dataset = open_dataset(data, load=False)
    table, rejects = encode_spectra(model, mock.paths)
    ref = encode_dataset(model, dataset, None, progress=False)
    assert len(table) + len(rejects) == len(mock.paths) and len(table) == len(dataset)
    assert sorted(table["id"]) == sorted(dataset.ids)
    order = np.argsort(np.asarray(ref["id"]))
    mine = np.argsort(np.asarray(table["id"]))
    for column in ("mu_1", "mu_2", "chi2_per_pixel", "elbo"):
        np.testing.assert_allclose(np.asarray(table[column])[mine], np.asarray(ref[column])[order], rtol=2e-4,
                                   atol=2e-4, err_msg=column)
    assert (Path(model) / REFERENCE).exists()


def test_percentile_is_among_training_spectra_of_similar_sn():
    train_sn = np.repeat([5.0, 10.0, 20.0, 40.0, 80.0], 20)
    train_elbo = np.where(train_sn > 30, 1000.0, 0.0) + np.tile(np.arange(20.0), 5)
    edges = sn_bin_edges(train_sn)
    # ELBO 500 is better than every low-S/N training spectrum and worse than every high-S/N one
    pct, bins = outlier_percentile([500.0, 500.0, np.nan], [6.0, 90.0, 6.0], train_elbo, train_sn, edges)
    assert pct[0] == 100.0 and pct[1] == 0.0 and np.isnan(pct[2])
    assert bins[0] != bins[1]


def test_an_unusual_spectrum_has_a_low_outlier_percentile(trained, tmp_path):
    mock, data, model, _ = trained
    ordinary = Path(mock.paths[5])
    odd = tmp_path / "odd galaxy.fits"
    with fits.open(ordinary) as hdul:  # a strong fake emission line at 6000 Å observed
        flux, loglam = hdul["COADD"].data["flux"], hdul["COADD"].data["loglam"]
        flux += 40 * np.median(flux) * np.exp(-0.5 * ((10 ** loglam - 6000.0) / 4.0) ** 2)
        hdul["SPECOBJ"].data["FIBERID"][0] = 999
        hdul.writeto(odd)
    table, _ = encode_spectra(model, [ordinary, odd])
    by_path = {Path(p).name: row for p, row in zip(table["path"], table)}
    assert by_path["odd galaxy.fits"]["outlier_percentile"] < 5
    assert by_path["odd galaxy.fits"]["chi2_per_pixel"] > 3 * by_path[ordinary.name]["chi2_per_pixel"]


def test_cli_encode_spectra_lists_rejects(trained, sdss_dir, tmp_path, capsys):
    from astropy.table import Table

    from galvae.cli import main

    mock, data, model, _ = trained
    folder = tmp_path / "mine"
    folder.mkdir()
    for k, p in enumerate(mock.paths[:3]):
        shutil.copy(p, folder / f"galaxy {k}.fits")
    shutil.copy(sdss_dir / "spec-0853-52374-0240.fits", folder / "a quasar.fits")
    (folder / "notes.fits").write_text("not FITS")
    out = tmp_path / "mine.ecsv"
    assert main(["encode", "--model", str(model), "--spectra", str(folder), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"rejected {folder / 'notes.fits'}: not a FITS file" in printed
    assert f"rejected {folder / 'a quasar.fits'}: not a galaxy" in printed
    assert "encoded 3 of 5 files, rejected 2" in printed
    table = Table.read(out)
    assert len(table) == 3 and {"outlier_percentile", "elbo", "chi2_per_pixel", "sn_median"} <= set(table.colnames)
    assert main(["encode", "--model", str(model), "--spectra", str(folder / "notes.fits"), "--out", str(out),
                 "--quiet"]) == 1
    assert "none of the 1 files gave a usable spectrum" in capsys.readouterr().err


def test_without_reference_or_dataset_the_error_says_what_to_give(trained, tmp_path):
    mock, data, model, _ = trained
    copy = tmp_path / "copied model"
    shutil.copytree(model, copy)
    (copy / REFERENCE).unlink(missing_ok=True)
    moved = tmp_path / "elsewhere.zarr"
    shutil.copytree(data, moved)
    import json

    config = json.loads((copy / "config.json").read_text())
    config["dataset_path"] = str(tmp_path / "gone.zarr")
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="give the dataset"):
        encode_spectra(copy, mock.paths[:2])
    table, _ = encode_spectra(copy, mock.paths[:2], data=moved)  # given once, then kept in the model folder
    assert len(table) == 2 and (copy / REFERENCE).exists()
    table, _ = encode_spectra(copy, mock.paths[:2])
    assert len(table) == 2


def test_a_dataset_without_its_fill_basis_gets_one_fitted_with_a_warning(trained, tmp_path, caplog):
    from galvae.explain.external import fill_basis_of

    _, data, _, _ = trained
    old = tmp_path / "old.zarr"
    shutil.copytree(data, old)
    stored = fill_basis_of(open_dataset(data, load=False))
    shutil.rmtree(old / "fill_basis")  # as galvae wrote datasets before it kept the basis
    with caplog.at_level("WARNING"):
        basis, mean = fill_basis_of(open_dataset(old, load=False))
    assert "keeps no fill basis" in caplog.text
    assert basis.shape == stored[0].shape and mean.shape == stored[1].shape


def test_errors_name_the_model_folder(trained, tmp_path):
    mock, _, model, _ = trained
    with pytest.raises(FileNotFoundError, match="no model at .*nowhere"):
        encode_spectra(tmp_path / "nowhere", mock.paths[:1])
