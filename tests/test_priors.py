"""Class-prior control (ferkit.priors): what --prior does to probabilities, checked on known numbers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_FERPLUS, needs_ferplus

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError
from ferkit.priors import FERPLUS_TRAIN_PRIOR, PRIOR_STRENGTH, ClassPrior, resolve_prior


def test_ferplus_prior_leaves_probabilities_unchanged():
    proba = np.random.default_rng(0).dirichlet(np.ones(8), size=5).astype(np.float32)
    assert resolve_prior("ferplus").apply(proba) is proba
    assert resolve_prior(None).name == "ferplus"


def test_uniform_prior_reweights_by_the_training_prior_and_renormalises():
    proba = np.array([[0.40, 0.05, 0.05, 0.05, 0.05, 0.05, 0.30, 0.05]], dtype=np.float32)
    adjusted = resolve_prior("uniform").apply(proba)
    expected = proba[0] * (1 / 8 / np.array(FERPLUS_TRAIN_PRIOR)) ** PRIOR_STRENGTH
    np.testing.assert_allclose(adjusted[0], expected / expected.sum(), rtol=1e-6)
    assert adjusted.sum() == pytest.approx(1.0, abs=1e-6)
    # neutral (34% of FERPlus training faces) loses its lead to fear (3%)
    assert proba.argmax() == EMOTIONS.index("neutral")
    assert adjusted.argmax() == EMOTIONS.index("fear")


def test_full_strength_uniform_prior_is_division_by_the_training_prior():
    proba = np.full((1, 8), 1 / 8)
    full = ClassPrior("uniform", resolve_prior("uniform").target, strength=1.0).apply(proba)
    expected = 1 / np.array(FERPLUS_TRAIN_PRIOR)
    np.testing.assert_allclose(full[0], expected / expected.sum())


def test_custom_prior_from_numbers_or_text():
    numbers = [2, 1, 1, 1, 1, 1, 1, 1]
    from_list, from_text = resolve_prior(numbers), resolve_prior("2,1,1,1,1,1,1,1")
    assert from_list == from_text and from_list.name == "custom"
    assert sum(from_list.target) == pytest.approx(1.0)
    assert from_list.to_dict()["target"][0] == pytest.approx(0.2222, abs=1e-4)


def test_neutral_prior_scales_neutral_alone_and_renormalises():
    proba = np.array([[0.50, 0.05, 0.05, 0.30, 0.04, 0.02, 0.02, 0.02]], dtype=np.float32)
    prior = resolve_prior("neutral:0.5")
    adjusted = prior.apply(proba)
    expected = proba[0].astype(np.float64).copy()
    expected[EMOTIONS.index("neutral")] *= 0.5
    np.testing.assert_allclose(adjusted[0], expected / expected.sum(), rtol=1e-5)
    # a face the crowd would call neutral by a little is read as the sadness it shows
    assert adjusted.argmax() == EMOTIONS.index("sadness")
    assert str(prior) == "neutral:0.5" and resolve_prior(str(prior)) == prior
    # as a target prior: FERPlus's with neutral half as frequent
    assert prior.to_dict()["target"][0] == pytest.approx(0.3373 * 0.5 / (1 - 0.3373 * 0.5), abs=1e-5)


@pytest.mark.parametrize("bad", ["neutral:", "neutral:x", "neutral:0", "neutral:-1"])
def test_bad_neutral_scale_is_an_error_naming_the_option(bad):
    with pytest.raises(ArgumentError, match="--prior neutral:"):
        resolve_prior(bad)


@pytest.mark.parametrize("bad", ["flat", "1,2,3", "a,b,c,d,e,f,g,h", [1, 1, 1, 1, 1, 1, 1, 0],
                                 [1, 1, 1, 1, 1, 1, 1, float("nan")]])
def test_bad_prior_is_an_error_naming_the_option(bad):
    with pytest.raises(ArgumentError, match="--prior"):
        resolve_prior(bad)


@pytest.mark.realdata
@needs_ferplus
def test_the_training_prior_is_ferplus_trains_mean_vote_distribution():
    from ferkit.data import label_split, load_ferplus

    train = label_split(load_ferplus(REAL_FERPLUS, splits=("train",))["train"], "crossentropy")
    np.testing.assert_allclose(train.targets.mean(axis=0), FERPLUS_TRAIN_PRIOR, atol=5e-6)


def test_frequencies_whose_sum_overflows_still_give_probabilities():
    huge = resolve_prior(",".join(["1e308"] * 8))
    assert np.allclose(huge.target, 1 / 8)
    tilted = resolve_prior("1e308,1e300,1e299,1e297,1e298,1e300,1e299,1e307")
    with pytest.raises(ArgumentError, match="12 orders of magnitude"):
        resolve_prior("1e308,1,1,1,1,1,1,1")
    proba = np.full((3, 8), 1 / 8, dtype=np.float32)
    for prior in (huge, tilted):
        out = prior.apply(proba)
        assert np.isfinite(out).all() and np.allclose(out.sum(axis=1), 1)
