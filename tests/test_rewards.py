import math

import pytest

from tfgrpo.rewards import combine, group_advantages, group_reward, has_contrast, reward, score_group


def test_grpo_hand_computed():
    # rewards 1,0,0,1 -> mean 0.5, population std 0.5 -> +-0.5/(0.5+1e-4)
    adv = group_advantages([[[1.0], [0.0], [0.0], [1.0]]], mode="grpo")[0]
    expect = 0.5 / (0.5 + 1e-4)
    assert adv == pytest.approx([expect, -expect, -expect, expect], rel=1e-12)


def test_dr_grpo_is_centred_not_scaled():
    adv = group_advantages([[[3.0], [1.0], [2.0]]], mode="dr_grpo")[0]
    assert adv == pytest.approx([1.0, -1.0, 0.0])


def test_grpo_uses_weighted_sum():
    # weights (2, 1): sums 2, 1, 0 -> mean 1, std sqrt(2/3)
    adv = group_advantages([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]], weights=[2.0, 1.0], mode="grpo")[0]
    std = math.sqrt(2 / 3)
    assert adv == pytest.approx([1 / (std + 1e-4), 0.0, -1 / (std + 1e-4)])


def test_gdpo_normalises_each_reward_then_the_batch():
    eps = 1e-4
    batch = [
        [[1.0, 0.0], [0.0, 1.0]],  # group 1: each column mean .5 std .5
        [[1.0, 1.0], [1.0, 0.0]],  # group 2: column 1 constant -> 0; column 2 +-1
    ]
    w = [1.0, 0.5]
    z = 0.5 / (0.5 + eps)
    raw = [w[0] * z + w[1] * -z, w[0] * -z + w[1] * z, 0 + w[1] * z, 0 + w[1] * -z]
    mean = sum(raw) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in raw) / 4)
    expect = [(a - mean) / (std + eps) for a in raw]
    got = group_advantages(batch, weights=w, mode="gdpo")
    assert got[0] + got[1] == pytest.approx(expect)


def test_missing_reward_is_excluded_and_gets_zero():
    adv = group_advantages([[[1.0], [None], [0.0]]], mode="dr_grpo")[0]
    assert adv == pytest.approx([0.5, 0.0, -0.5])


def test_equal_group_has_zero_advantage_and_no_contrast():
    assert group_advantages([[[1.0], [1.0]]])[0] == [0.0, 0.0]
    assert not has_contrast([1.0, 1.0, 1.0], 0.0, 1.0)
    assert not has_contrast([0.0, 0.0], 0.0, 1.0)
    assert not has_contrast([0.5, 0.5], 0.0, 1.0)
    assert has_contrast([1.0, 0.0, 0.0], 0.0, 1.0)


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages([[[1.0]]], mode="ppo")


async def test_score_group_records_raising_reward_as_missing_and_failed_rollout_as_unscored():
    @reward(weight=2.0)
    def fragile(sample, completion):
        if completion == "boom":
            raise RuntimeError("bad")
        return completion == "yes"

    @group_reward
    def nonempty(sample, completions):
        return [1.0 if c else 0.5 for c in completions]

    table = await score_group([fragile, nonempty], object(), ["yes", "boom", None])
    assert table == [[1.0, 1.0], [None, 1.0], [None, None]]  # the group reward never saw the failed one
    assert group_advantages([table], [2.0, 1.0])[0][2] == 0.0
    assert combine(table[0], [2.0, 1.0]) == 1.0
    assert combine(table[1], [2.0, 1.0]) is None


def test_advantage_std_unbiased_matches_ddof_1_and_population_is_sqrt_g_over_g_minus_1_larger():
    """Issue 11, defect 10: TRL normalises by the unbiased std (ddof=1)."""
    import numpy as np

    r = [1.0, 0.0, 0.0, 1.0, 1.0]
    rows = [[[v] for v in r]]
    unbiased = group_advantages(rows, mode="grpo", std="unbiased", eps=0.0)[0]
    population = group_advantages(rows, mode="grpo", std="population", eps=0.0)[0]
    x = np.array(r)
    assert unbiased == pytest.approx(list((x - x.mean()) / x.std(ddof=1)), rel=1e-12)
    assert [p / u for p, u in zip(population, unbiased)] == pytest.approx([math.sqrt(5 / 4)] * 5)
    assert group_advantages([[[1.0]]], std="unbiased")[0] == [0.0]  # a group of one: no spread
    with pytest.raises(ValueError, match="unknown std"):
        group_advantages(rows, std="sample")


def test_run_config_defaults_to_the_unbiased_std():
    from tfgrpo.training_free.config import RunConfig

    assert RunConfig().advantage_std == "unbiased"
