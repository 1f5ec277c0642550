"""jdistill.report's mean +- std line; its permutation test against hand counts and an independent enumeration; its bootstrap
interval against hand cases and the normal approximation."""

import itertools

import numpy as np
import pytest

from jdistill.report import bootstrap_interval, mean_std, paired_difference, permutation_p_value


def test_mean_std_in_points_with_the_population_spread_and_a_sign_on_request():
    assert mean_std([0.97, 0.99]) == "98.00 +- 1.00"
    assert mean_std([-0.02, -0.018], signed=True) == "-1.90 +- 0.10"
    assert mean_std([0.018], signed=True) == "+1.80" and mean_std([0.018]) == "1.80"
    assert mean_std([1.5, 2.5], scale=1, digits=1, signed=True) == "+2.0 +- 0.5"


def test_paired_difference_pairs_by_key_and_skips_keys_the_reference_lacks():
    # seeds 1 and 0 in either order: +0.02 and +0.04; seed 5 has no reference
    assert paired_difference({1: 0.62, 0: 0.64, 5: 0.9}, {0: 0.60, 1: 0.60}) == "+3.00 +- 1.00"
    assert paired_difference({5: 0.9}, {0: 0.6}) == ""


def test_permutation_p_value_counts_splits_by_hand():
    # {1, 2} against {3, 4}: of the 6 splits of {1, 2, 3, 4} into two pairs, only {1, 2}|{3, 4} and
    # {3, 4}|{1, 2} give a difference of means as large as 2.
    assert permutation_p_value([1, 2], [3, 4]) == pytest.approx(2 / 6)
    # one value a side: the two splits give +-1, both as large as the observed.
    assert permutation_p_value([0], [1]) == 1.0
    # identical groups: every split is at least as far apart as a difference of 0.
    assert permutation_p_value([1, 2, 3], [1, 2, 3]) == 1.0
    # {0, 0, 0} | {10, 10, 10}: the observed split and its mirror of 20 splits.
    assert permutation_p_value([0, 0, 0], [10, 10, 10]) == pytest.approx(2 / 20)


def test_permutation_p_value_matches_a_direct_enumeration_and_is_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5), rng.normal(1, 1, 6)
    pooled = np.concatenate([a, b])
    observed = abs(b.mean() - a.mean())
    count = total = 0
    for first in itertools.combinations(range(11), 5):
        rest = [i for i in range(11) if i not in first]
        total += 1
        count += abs(pooled[rest].mean() - pooled[list(first)].mean()) >= observed - 1e-12
    p = permutation_p_value(a, b)
    assert p == pytest.approx(count / total)
    assert permutation_p_value(b, a) == pytest.approx(p)
    assert permutation_p_value(a + 7.0, b + 7.0) == pytest.approx(p)  # shift-invariant
    assert 0 < p < 1


def test_permutation_p_value_samples_random_splits_beyond_the_exact_limit():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5), rng.normal(1, 1, 6)
    exact = permutation_p_value(a, b)
    sampled = permutation_p_value(a, b, max_exact=0, samples=100_000)
    assert sampled != exact and sampled == pytest.approx(exact, abs=0.006)  # binomial sd about 0.0015
    # far apart: no random split reaches the observed one, and the estimate counts the observed split
    assert permutation_p_value([0.0] * 12, [10.0] * 12, samples=999) == pytest.approx(1 / 1000)
    assert permutation_p_value(range(13), range(13), samples=1_000) == 1.0  # C(26, 13) splits: sampled


def test_permutation_p_value_refuses_empty_groups_and_no_samples():
    with pytest.raises(ValueError, match="non-empty"):
        permutation_p_value([], [1.0])
    with pytest.raises(ValueError, match="samples must be at least 1"):
        permutation_p_value([1.0], [2.0], samples=0)


def test_bootstrap_interval_by_hand():
    # constant groups: every resample has the same difference
    assert bootstrap_interval([1.0, 1.0], [4.0, 4.0, 4.0]) == (3.0, 3.0)
    # {55, 59} against {65, 67}: resampled means 55 / 57 / 59 and 65 / 66 / 67 with chances 1/4, 1/2,
    # 1/4, so the difference is 6 or 12 with chance 1/16 each (> 2.5 %): the 95 % interval is [6, 12]
    assert bootstrap_interval([55, 59], [65, 67]) == (6.0, 12.0)


def test_bootstrap_interval_meets_the_normal_approximation_for_large_groups():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 400), rng.normal(1, 2, 300)
    difference = b.mean() - a.mean()
    half = 1.96 * np.sqrt(a.var() / len(a) + b.var() / len(b))
    low, high = bootstrap_interval(a, b)
    assert low == pytest.approx(difference - half, abs=0.05 * half)
    assert high == pytest.approx(difference + half, abs=0.05 * half)
    inner = bootstrap_interval(a, b, level=0.5)
    assert low < inner[0] < difference < inner[1] < high
    assert bootstrap_interval(a, b) == (low, high)  # seeded
    mirrored = bootstrap_interval(b, a)
    assert mirrored == pytest.approx((-high, -low), abs=0.05 * half)


def test_bootstrap_interval_refuses_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([1.0], [])
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        bootstrap_interval([1.0], [2.0], level=95)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        bootstrap_interval([1.0], [2.0], samples=0)
