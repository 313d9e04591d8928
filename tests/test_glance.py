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
    "latent_information": {"vae_r2": {"logmstar": 0.87, "logssfr": 0.62},
                           "vae_vs_pca": [{"source": "catalog", "vae_at_least": True},
                                          {"source": "catalog", "vae_at_least": False},
                                          {"source": "truth", "vae_at_least": False}]},
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
    assert "The runner-up, d = 4, has a higher BIC by 12.5 ± 2.5 per test spectrum, 5.0 standard errors: " \
           "clearly (paired over 240 test spectra)." in text
    assert "Over seeds, the lowest-BIC model's BIC spreads by 4.5 (standard deviation)." in text
    assert "compact VAE with d = 3 (d3_vae_s1), trained until early stopping; on 240 test spectra its " \
           "reconstructions reach χ²/pixel 1.07" in text
    assert "D1 (70% of the latent variance) falls with logssfr, closely (MI 0.91 ± 0.04 nats" in text
    assert "D2 (20% of the latent variance) rises with logmstar, weakly at best" in text
    assert "D3 (10% of the latent variance) follows no catalogue property clearly" in text
    assert "logmstar is predicted with R² = 0.87, logssfr is predicted with R² = 0.62" in text
    assert "in 1 of 2 comparisons" in text  # catalogue properties only
    assert "The most unusual test spectrum, 0266-51602-0001, is explained worse than 99.6% of training spectra of " \
           "similar S/N (χ²/pixel 7.25); it and the next 1 are drawn" in text


def test_glance_has_no_raw_keys(tmp_path):
    text = _text(tmp_path)
    for raw in ("criterion", "= bic", "model_dir", "bic_mean", "n_spectra", "conditions_label", "{", "_"):
        assert raw not in text.replace("d3_vae_s1", ""), raw


def test_how_sure_follows_the_paired_difference(tmp_path):
    weak = {**BEST, "runner_up_paired_difference": {"mean": 1.0, "stderr": 2.0, "n": 240}}
    assert "0.5 standard errors: within the noise" in _text(tmp_path, weak)
    big = {**BEST, "runner_up_paired_difference": {"mean": 453.2, "se": 181.4, "stderr": 170.0, "n_spectra": 32}}
    assert "higher BIC by 453 ± 181 per test spectrum, 2.5 standard errors: probably, not decisively (paired over " \
           "32 test spectra)" in _text(tmp_path, big)


def test_glance_tells_the_one_standard_error_choice(tmp_path):
    """select's recommended choice (best.json one_se_plain_vae) is what the glance reports first."""
    compared = [{"conditions_label": "vae", "d": 4, "k": 4, "bic_mean": -617.1, "difference_to_lowest": 0.0,
                 "se": 0.0, "within_one_se": True},
                {"conditions_label": "vae", "d": 3, "k": 3, "bic_mean": -615.0, "difference_to_lowest": 2.1,
                 "se": 3.0, "within_one_se": True},
                {"conditions_label": "vae", "d": 2, "k": 2, "bic_mean": -500.0, "difference_to_lowest": 117.1,
                 "se": 9.0, "within_one_se": False}]
    one = {"conditions_label": "vae", "d": 3, "k": 3, "bic_mean": -615.0, "model_dir": "cells/d3_vae_s0",
           "lowest": {"conditions_label": "vae", "d": 4, "k": 4, "bic_mean": -617.1}, "compared": compared}
    text = _text(tmp_path, {**BEST, "one_se_plain_vae": one})
    assert "The BIC chose d = 3 latent variables (a plain VAE) by the one-standard-error rule: of 3 models " \
           "compared (3 seeds each), 2 are within one paired standard error of the lowest mean BIC, and this one " \
           "has the fewest parameters; the lowest mean BIC is at d = 4." in text
    assert "Fewer latents fit worse: d = 2 has a higher BIC than the lowest by 117 ± 9 per test spectrum, 13.0 " \
           "standard errors: clearly." in text
    assert "The lowest-BIC model, d = 4, is better than the chosen one by only 2.1 ± 3 per test spectrum, 0.7 " \
           "standard errors: within the noise." in text
