"""Each FERPlus label protocol on hand-computed vote vectors (ties and empty rows included)."""

import numpy as np
import pytest

from ferkit.data.protocols import PROTOCOLS, apply_protocol, drop_reasons

N, H, SU, SA, A, D, F, C, U, NF = range(10)


def one_hot(i):
    v = np.zeros(8, np.float32)
    v[i] = 1
    return v


def dist(**weights):
    names = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    v = np.zeros(8, np.float32)
    for k, w in weights.items():
        v[names.index(k)] = w
    return v / v.sum()


# (votes, {protocol: expected target or None for dropped})
CASES = [
    # outlier vote of 1 removed; contempt holds 7 of the remaining 9
    ([0, 0, 0, 0, 2, 1, 0, 7, 0, 0], {"majority": one_hot(C), "crossentropy": one_hot(C),
                                      "multi_target": one_hot(C), "argmax": one_hot(C)}),
    # sadness 5 of 10 is not > 50%: majority drops; soft keeps neutral+sadness (8 >= 7.5)
    ([3, 0, 0, 5, 0, 0, 0, 0, 2, 0], {"majority": None, "crossentropy": dist(neutral=3, sadness=5),
                                      "multi_target": dist(neutral=3, sadness=5),
                                      "argmax": one_hot(SA)}),
    # neutral 6 of 8 (after outliers): 6 >= 0.75 * 8 stops the soft loop at one emotion
    ([6, 0, 1, 2, 0, 0, 0, 0, 1, 0], {"majority": one_hot(N), "crossentropy": one_hot(N),
                                      "multi_target": dist(neutral=6), "argmax": one_hot(N)}),
    # a tie: majority drops, argmax takes the lower index, soft keeps both
    ([4, 4, 0, 0, 0, 0, 0, 0, 2, 0], {"majority": None, "crossentropy": dist(neutral=1, happiness=1),
                                      "multi_target": dist(neutral=1, happiness=1),
                                      "argmax": one_hot(N)}),
    # all unknown / all NF: dropped everywhere
    ([0, 0, 0, 0, 0, 0, 0, 0, 10, 0], dict.fromkeys(("majority", "crossentropy", "multi_target",
                                                     "argmax"))),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], dict.fromkeys(("majority", "crossentropy", "multi_target",
                                                     "argmax"))),
    # every vote an outlier: nothing left, except plain argmax (tie -> neutral)
    ([1] * 10, {"majority": None, "crossentropy": None, "multi_target": None,
                "argmax": one_hot(N)}),
    # an emotion tied with unknown: the soft loop stops at unknown, covers only 5 of 10 -> dropped;
    # multi-target keeps both, and the tie at the peak goes to the emotion (lower index)
    ([5, 0, 0, 0, 0, 0, 0, 0, 5, 0], {"majority": None, "crossentropy": None,
                                      "multi_target": one_hot(N), "argmax": one_hot(N)}),
    # 4 emotions needed to reach 75%: soft drops; multi-target keeps the two at >= 30%
    ([3, 3, 2, 2, 0, 0, 0, 0, 0, 0], {"majority": None, "crossentropy": None,
                                      "multi_target": dist(neutral=1, happiness=1),
                                      "argmax": one_hot(N)}),
]


@pytest.mark.parametrize("votes,expected", CASES)
@pytest.mark.parametrize("protocol", ["majority", "crossentropy", "multi_target", "argmax"])
def test_protocol_on_hand_computed_votes(votes, expected, protocol):
    targets, keep = apply_protocol(np.array([votes]), protocol)
    want = expected[protocol]
    if want is None:
        assert not keep[0]
        assert targets[0].sum() == 0
    else:
        assert keep[0]
        np.testing.assert_allclose(targets[0], want, atol=1e-6)


def test_probability_uses_the_crossentropy_distribution():
    votes = np.array([c[0] for c in CASES])
    t1, k1 = apply_protocol(votes, "probability")
    t2, k2 = apply_protocol(votes, "crossentropy")
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_allclose(t1, t2)


def test_kept_targets_are_distributions():
    votes = np.random.default_rng(0).integers(0, 6, (500, 10))
    for name in PROTOCOLS:
        targets, keep = apply_protocol(votes, name)
        np.testing.assert_allclose(targets[keep].sum(axis=1), 1, atol=1e-5)
        assert (targets[~keep] == 0).all()


@pytest.mark.parametrize(("votes", "expected"), [
    ([0, 0, 0, 0, 2, 1, 0, 7, 0, 0], dist(anger=2, disgust=1, contempt=7)),  # the single vote stays
    ([6, 0, 1, 2, 0, 0, 0, 0, 1, 0], dist(neutral=6, surprise=1, sadness=2)),  # unknown's vote leaves
    ([3, 3, 2, 2, 0, 0, 0, 0, 0, 0], dist(neutral=3, happiness=3, surprise=2, sadness=2)),  # no top-3 cut
    ([1] * 10, dist(**dict.fromkeys(["neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                                     "fear", "contempt"], 1))),
])
def test_all_votes_keeps_every_emotion_vote(votes, expected):
    targets, keep = apply_protocol(np.array([votes]), "all_votes")
    assert keep[0]
    np.testing.assert_allclose(targets[0], expected, atol=1e-6)


def test_all_votes_drops_faces_where_unknown_or_nf_leads():
    _, keep = apply_protocol(np.array([[0] * 8 + [10, 0], [0] * 9 + [10], [2, 0, 0, 0, 0, 0, 0, 0, 3, 5]]),
                             "all_votes")
    assert not keep.any()


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown label protocol 'soft'"):
        apply_protocol(np.zeros((1, 10)), "soft")


def test_drop_reasons_counts_nf_unknown_and_disagreement():
    votes = np.array([[0] * 9 + [10], [0] * 8 + [10, 0], [3, 0, 0, 5, 0, 0, 0, 0, 2, 0]])
    _, keep = apply_protocol(votes, "majority")
    assert drop_reasons(votes, keep) == {"not a face (NF)": 1, "unknown": 1, "no agreement": 1}
