"""The report's "At a glance": sentences with their numbers, no raw keys."""

import json
import re

from galvae.report.html import glance_section

SUMMARY = {
    "model_dir": "/runs/x/select/cells/d3_vae_s1", "n_spectra": 2385,
    "mutual_information": {"tracks": [
        {"latent": "D1", "property": "logssfr", "mi": 0.91, "mi_err": 0.04, "rho": -0.83},
        {"latent": "D2", "property": "logmstar", "mi": 0.12, "mi_err": 0.09, "rho": 0.2},
        {"latent": "D3", "property": None, "mi": float("nan"), "mi_err": float("nan"), "rho": float("nan")}]},
    "unusual": [{"id": "0266-51602-0001", "outlier_percentile": 0.4, "sn_median": 38.1, "elbo": -5210.0,
                 "chi2_per_pixel": 7.25}, {"id": "x", "outlier_percentile": 1.0, "sn_median": 9.0, "elbo": -10.0,
                                           "chi2_per_pixel": 2.0}],
    "shap": {"fidelity": {"max_relative_error": 3e-14, "tolerance": 1e-6}},
    "prediction": {"logmstar": {"r2": 0.87}, "logssfr": {"r2": 0.62}},
}
BEST = {"criterion": "bic", "definition": "mean over test spectra of BIC_i …", "conditions_label": "vae", "d": 3, "k": 3,
        "bic_mean": -617.1, "bic_seed_std": 4.5, "bic_by_seed": {"0": -620.0, "1": -614.0, "2": -617.3},
        "model_dir": "cells/d3_vae_s1",
        "ranking": [{"conditions_label": "vae", "d": 3}, {"conditions_label": "vae", "d": 4},
                    {"conditions_label": "vae", "d": 2}],
        "runner_up_paired_difference": {"mean": 12.5, "stderr": 2.5, "n": 240},
        "other_criteria": {"bic_best_restart": {"conditions_label": "vae", "d": 4}}}
MODEL = {"status": "early_stopped", "model": {"arch": "compact", "latent_dim": 3}}
METRICS = {"n_test": 240, "chi2_per_pixel": {"mean": 1.0734, "stderr": 0.01}}
ATTRS = {"counts": {"files": 2500, "kept": 2385, "rejected": 115, "split": {"train": 1900, "val": 245, "test": 240}}}


def _text(tmp_path, best=BEST):
    (tmp_path / "best.json").write_text(json.dumps(best))
    html = glance_section(SUMMARY, {"explained_variance_ratio": [0.7, 0.2, 0.1]}, tmp_path, MODEL, METRICS, ATTRS)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def test_glance_is_sentences_with_numbers(tmp_path):
    text = _text(tmp_path)
    assert "2,385 spectra of 2,500 files were kept (1,900 to train, 245 to stop training, 240 to score); 115" in text
    assert "The BIC chose d = 3 latent variables (a plain VAE), the lowest mean test BIC of 3 models compared " \
           "(3 seeds each)." in text
    assert "The runner-up, d = 4, scores 12.5 ± 2.5 higher per test spectrum (paired over 240 test spectra, " \
           "5.0 standard errors): a clear preference." in text
    assert "best-validation seed instead would choose d = 4" in text
    assert "Over seeds, the chosen model's BIC spreads by 4.5 (standard deviation)." in text
    assert "compact VAE with d = 3 (d3_vae_s1), trained until early stopping; on 240 test spectra its " \
           "reconstructions reach χ²/pixel 1.07" in text
    assert "D1 (70% of the latent variance) falls with logssfr, closely (MI 0.91 ± 0.04 nats" in text
    assert "D2 (20% of the latent variance) rises with logmstar, weakly at best" in text
    assert "D3 (10% of the latent variance) follows no catalogue property clearly" in text
    assert "logmstar is predicted with R² = 0.87, logssfr is predicted with R² = 0.62" in text
    assert "The most unusual test spectrum, 0266-51602-0001, is explained worse than 99.6% of training spectra of " \
           "similar S/N (χ²/pixel 7.25); it and the next 1 are drawn" in text


def test_glance_has_no_raw_keys(tmp_path):
    text = _text(tmp_path)
    for raw in ("criterion", "= bic", "model_dir", "bic_mean", "n_spectra", "conditions_label", "{", "_"):
        assert raw not in text.replace("d3_vae_s1", ""), raw


def test_how_sure_follows_the_paired_difference(tmp_path):
    weak = {**BEST, "runner_up_paired_difference": {"mean": 1.0, "stderr": 2.0, "n": 240}}
    assert "0.5 standard errors): no real preference" in _text(tmp_path, weak)
    big = {**BEST, "runner_up_paired_difference": {"mean": 453.2, "stderr": 181.4, "n": 32}}
    assert "scores 453 ± 181 higher per test spectrum (paired over 32 test spectra, 2.5 standard errors): a " \
           "preference, but not a decisive one." in _text(tmp_path, big)
