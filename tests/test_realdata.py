"""The real FERPlus data in ../shared (skipped with a reason when absent)."""

import time

import pytest
from conftest import REAL_FERPLUS, needs_ferplus

from ferkit.data import load_ferplus, summarize

pytestmark = [needs_ferplus, pytest.mark.realdata]

TEST_MAJORITY = {"neutral": 1083, "happiness": 892, "surprise": 394, "sadness": 382,
                 "anger": 269, "disgust": 16, "fear": 86, "contempt": 15}


def test_majority_counts_match_the_reference_reader():
    data = load_ferplus(REAL_FERPLUS)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [28558, 3579, 3573]
    splits = summarize(data, "majority")["splits"]
    assert [splits[s]["labeled"] for s in ("train", "valid", "test")] == [25045, 3191, 3137]
    assert splits["test"]["per_class"] == TEST_MAJORITY

    started = time.perf_counter()
    again = load_ferplus(REAL_FERPLUS)
    assert again.from_cache
    print(f"cached load of all three splits: {time.perf_counter() - started:.2f} s")
