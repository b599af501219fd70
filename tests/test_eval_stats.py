"""The estimators and the paired test against values worked out by hand."""

import pytest

from tfgrpo.training_free.evaluate import ArmRun, arm_summary, paired_diff, verdict
from tfgrpo.training_free.stats import bootstrap_ci, paired_permutation_p, pass_at_k


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (8, 3, 4, 1 - 5 / 70),  # 1 - C(5,4)/C(8,4)
        (4, 1, 1, 0.25),  # k = 1: the fraction right
        (10, 0, 3, 0.0),  # never right
        (4, 3, 2, 1.0),  # fewer wrong answers than k: every k-subset holds a right one
        (4, 2, 4, 1.0),  # n = k: solved at least once
        (4, 0, 4, 0.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError, match="larger than"):
        pass_at_k(3, 1, 4)


def test_arm_summary_means_over_problems_and_seeds():
    arm = ArmRun(name="baseline", n=4, correct={(0, "a"): 2, (0, "b"): 0, (1, "a"): 4, (1, "b"): 1})
    s = arm_summary(arm, ["a", "b"], [0, 1], k=2)
    # Mean@2 per problem: a (2/4 + 4/4)/2 = 0.75, b (0 + 1/4)/2 = 0.125 -> 0.4375
    assert s["mean_at_k"] == pytest.approx(0.4375)
    # Pass@2: a: seed0 1 - C(2,2)/C(4,2) = 5/6, seed1 1 -> 11/12; b: seed0 0, seed1 1 - C(3,2)/C(4,2) = 1/2 -> 1/4
    assert s["pass_at_k"] == pytest.approx((11 / 12 + 1 / 4) / 2, abs=1e-6)
    assert s["samples"] == 4 * 2 * 2 and s["problems"] == 2
    low, high = s["ci95"]
    assert 0.125 <= low <= s["mean_at_k"] <= high <= 0.75


def test_bootstrap_interval_of_a_constant_is_the_constant():
    assert bootstrap_ci([0.3] * 20) == pytest.approx((0.3, 0.3))


def test_bootstrap_interval_matches_the_normal_approximation():
    values = [0.0, 1.0] * 200  # mean 0.5, sd 0.5, se 0.025 -> about [0.451, 0.549]
    low, high = bootstrap_ci(values, resamples=4000)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.008)
    assert high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.008)


def test_permutation_p_exact_on_constructed_data():
    # 10 problems all better by 1: only the all-plus and all-minus patterns reach |mean| = 1.
    assert paired_permutation_p([1.0] * 10) == pytest.approx(2 / 2**10)
    # Differences cancel: every pattern is at least as extreme as 0.
    assert paired_permutation_p([1.0, -1.0, 1.0, -1.0]) == 1.0
    # [1, 1, 1, 0]: |sum| = 3 needs the three ones to share a sign: 2 of 8 patterns.
    assert paired_permutation_p([1.0, 1.0, 1.0, 0.0]) == pytest.approx(0.25)
    # Nothing differs at all.
    assert paired_permutation_p([0.0] * 5) == 1.0


def test_permutation_p_sampled_beyond_the_exact_size():
    # 40 equal gains: no random sign pattern of 20000 matches; two-sided p = 2 (1 + 0) / (1 + 20000).
    assert paired_permutation_p([0.5] * 40) == pytest.approx(2 / 20001)
    # Symmetric noise around 0: far from significant.
    assert paired_permutation_p([0.25, -0.25] * 20) > 0.5


def test_paired_diff_says_no_significant_difference_when_the_interval_holds_zero():
    same = paired_diff([0.5, 0.25, 1.0, 0.0], [0.5, 0.25, 1.0, 0.0])
    assert same == {"mean": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "significant": False}
    assert verdict(same, 4).startswith("no significant difference")
    noisy = paired_diff([0.5] * 8, [0.75, 0.25] * 4)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and not noisy["significant"]
    assert "no significant difference" in verdict(noisy, 4)
    better = paired_diff([0.25] * 12, [0.75] * 12)
    assert better["significant"] and better["mean"] == 0.5 and better["p_value"] == pytest.approx(2 / 2**12, abs=1e-6)
    assert verdict(better, 4).startswith("library better")


def test_verdict_needs_interval_and_test_to_agree_and_warns_on_few_problems():
    # Issue 13: "library better" at p = 0.0625 with n = 5 (the interval alone decided).
    five = paired_diff([0.0] * 5, [0.25] * 5)
    assert five["p_value"] == pytest.approx(2 / 2**5) and five["p_value"] > 0.05
    assert five["ci95"][0] > 0  # the interval alone would have called it
    assert not five["significant"]
    text = verdict(five, 4, problems=5)
    assert text.startswith("no significant difference") and "interval and test disagree, the weaker wins" in text
    assert "only 5 problems (fewer than 20)" in text
    many = paired_diff([0.0] * 30, [0.25] * 30)
    assert many["significant"] and "fewer than" not in verdict(many, 4, problems=30)


def test_bca_interval_is_scipys():
    from scipy import stats
    import numpy as np

    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.75, 0.0, 0.5, 0.25, 1.0]
    ref = stats.bootstrap((np.asarray(values),), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7))
    assert bootstrap_ci(values, seed=7) == pytest.approx(tuple(ref.confidence_interval))


def test_the_same_counts_in_another_seed_order_are_no_difference():
    """Counts (1, 3, 3) and (3, 3, 1) over three seeds are 7 of 9 right in both arms: float
    noise in the per-problem means must not become a 'significant' difference."""
    ids, seeds = [f"p{i}" for i in range(8)], [0, 1, 2]
    base = ArmRun(
        name="baseline", n=3, correct={(s, i): c for i in ids for s, c in zip(seeds, (1, 3, 3))}, failures=0, answers=[]
    )
    lib = ArmRun(
        name="library", n=3, correct={(s, i): c for i in ids for s, c in zip(seeds, (3, 3, 1))}, failures=0, answers=[]
    )
    d = paired_diff(base.per_problem(ids, seeds, 1)[0], lib.per_problem(ids, seeds, 1)[0])
    assert d == {"mean": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "significant": False}
    assert verdict(d, 1, 8).startswith("no significant difference")


def test_one_problem_and_a_negative_seed_give_numbers_not_a_crash():
    assert paired_permutation_p([0.5]) == 1.0
    d = paired_diff([0.25], [0.75], seed=-1)
    assert d["p_value"] == 1.0 and not d["significant"]
    many = paired_diff([0.0] * 30, [0.5] * 15 + [0.0] * 15, seed=-7)
    assert many == paired_diff([0.0] * 30, [0.5] * 15 + [0.0] * 15, seed=-7)  # seeded, reproducible
    assert bootstrap_ci([0.1, 0.4, 0.9], seed=-3) == bootstrap_ci([0.1, 0.4, 0.9], seed=-3)


def test_the_verdict_counts_failed_requests_and_failed_rewards_per_arm():
    from tfgrpo.training_free.evaluate import _failed

    base = ArmRun(name="baseline", n=4, failures=0, unscored=2)
    lib = ArmRun(name="library", n=4, failures=3, unscored=0)
    assert _failed(base, lib) == (
        "; failed requests, counted as wrong: 3 library, 0 baseline"
        "; answers whose reward failed, counted as wrong: 0 library, 2 baseline"
    )
    assert _failed(ArmRun(name="b", n=1), ArmRun(name="l", n=1)) == ""
