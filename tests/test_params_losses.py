"""Each parameter-mode loss against values worked out by hand on small tensors."""

import math

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.params import losses
from tfgrpo.rewards import has_contrast  # noqa: E402

# Two responses, three token slots; the second response has two real tokens.
LOGP = torch.tensor([[math.log(0.5), math.log(0.5), math.log(0.5)], [math.log(0.3), math.log(0.3), 0.0]])
OLD = torch.tensor([[math.log(0.4), math.log(0.5), math.log(0.6)], [math.log(0.3), math.log(0.2), 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -1.0])
# ratios: row 0 = 1.25, 1.0, 0.8333 (A=+1); row 1 = 1.0, 1.5 (A=-1)


def test_clipped_token_loss_by_hand():
    out = losses.clipped_token_loss(LOGP, OLD, ADV, 0.2, 0.2)
    # A>0: -min(w, clip(w)) -> w=1.25 clipped to 1.2; w=0.8333 unclipped (min picks it)
    assert out[0].tolist() == pytest.approx([-1.2, -1.0, -0.5 / 0.6])
    # A<0: -min(-w, -clip(w)) = max(w, clip(w)) -> w=1.5 stays 1.5 (no clip benefit)
    assert out[1, :2].tolist() == pytest.approx([1.0, 1.5])


def test_grpo_is_mean_of_per_sequence_token_means():
    row0 = (-1.2 - 1.0 - 0.5 / 0.6) / 3
    row1 = (1.0 + 1.5) / 2
    got = losses.grpo_loss(LOGP, OLD, ADV, MASK, eps=0.2)
    assert float(got) == pytest.approx((row0 + row1) / 2)


def test_dr_grpo_divides_by_constant():
    total = -1.2 - 1.0 - 0.5 / 0.6 + 1.0 + 1.5
    got = losses.dr_grpo_loss(LOGP, OLD, ADV, MASK, max_len=4, eps=0.2)
    assert float(got) == pytest.approx(total / (2 * 4))


def test_dapo_clip_higher_and_token_mean():
    # eps_high 0.28: w=1.25 is no longer clipped for A>0
    total = -1.25 - 1.0 - 0.5 / 0.6 + 1.0 + 1.5
    got = losses.dapo_loss(LOGP, OLD, ADV, MASK, eps_low=0.2, eps_high=0.28)
    assert float(got) == pytest.approx(total / 5)


def test_gspo_sequence_ratio():
    s0 = math.exp((math.log(1.25) + 0 + math.log(0.5 / 0.6)) / 3)  # ~1.0131 -> clipped to 1.0004
    s1 = math.exp((0 + math.log(1.5)) / 2)  # ~1.2247, A<0: max(s, clip(s)) = s
    expected = (-min(s0, 1 + 4e-4) + s1) / 2
    got = losses.gspo_loss(LOGP, OLD, ADV, MASK, eps_low=3e-4, eps_high=4e-4)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_gspo_on_policy_is_policy_gradient():
    logp = LOGP.clone().requires_grad_(True)
    loss = losses.gspo_loss(logp, logp.detach(), ADV, MASK)
    loss.backward()
    # d/dlogp of -s_i A_i at s=1 is -A_i / |o_i| per real token, averaged over N=2
    assert logp.grad[0].tolist() == pytest.approx([-1 / 6] * 3)
    assert logp.grad[1].tolist() == pytest.approx([1 / 4, 1 / 4, 0.0])


def test_k3_kl_by_hand_and_added_with_beta():
    ref = torch.tensor([[math.log(0.25), math.log(0.5), math.log(1.0)], [math.log(0.3), math.log(0.6), 0.0]])
    kl = losses.k3_kl(LOGP, ref)
    d = math.log(0.25 / 0.5)
    assert float(kl[0, 0]) == pytest.approx(math.exp(d) - d - 1)
    assert float(kl[0, 1]) == pytest.approx(0.0)
    assert (kl >= 0).all()
    base = losses.dapo_loss(LOGP, OLD, ADV, MASK)
    with_kl = losses.dapo_loss(LOGP, OLD, ADV, MASK, ref_logp=ref, beta=0.1)
    assert float(with_kl - base) == pytest.approx(0.1 * float((kl * MASK).sum() / 5), rel=1e-5)


def test_denominator_makes_micro_batches_add_up():
    full = losses.dapo_loss(LOGP, OLD, ADV, MASK)
    denom = losses.loss_denominator("dapo", [MASK[:1], MASK[1:]], max_len=3)
    parts = sum(
        losses.dapo_loss(LOGP[i : i + 1], OLD[i : i + 1], ADV[i : i + 1], MASK[i : i + 1], denominator=denom)
        for i in range(2)
    )
    assert float(parts) == pytest.approx(float(full))
    for name in losses.LOSSES:
        full = losses.policy_loss(name, LOGP, OLD, ADV, MASK, eps_low=0.2, eps_high=0.28, max_len=3)
        denom = losses.loss_denominator(name, [MASK[:1], MASK[1:]], max_len=3)
        parts = sum(
            losses.policy_loss(
                name,
                LOGP[i : i + 1],
                OLD[i : i + 1],
                ADV[i : i + 1],
                MASK[i : i + 1],
                eps_low=0.2,
                eps_high=0.28,
                max_len=3,
                denominator=denom,
            )
            for i in range(2)
        )
        assert float(parts) == pytest.approx(float(full)), name


def test_clip_fraction_counts_only_binding_clips():
    # row 0 A>0: 1.25 > 1.2 clipped; row 1 A<0: 1.5 is above the range but A<0 so not clipped
    assert losses.clip_fraction(LOGP, OLD, ADV, MASK, eps_low=0.2, eps_high=0.2) == pytest.approx(1 / 5)
    assert losses.clip_fraction(LOGP, OLD, ADV, MASK, eps_low=0.2, eps_high=0.28) == pytest.approx(0.0)


def test_overlong_penalty_three_regions():
    assert losses.overlong_penalty(10, max_len=20, buffer=5) == 0.0
    assert losses.overlong_penalty(15, max_len=20, buffer=5) == 0.0
    assert losses.overlong_penalty(18, max_len=20, buffer=5) == pytest.approx(-3 / 5)
    assert losses.overlong_penalty(21, max_len=20, buffer=5) == -1.0
    assert losses.overlong_penalty(30, max_len=20, buffer=0) == 0.0


def test_dynamic_sampling_keeps_groups_with_spread():
    assert has_contrast([0.0, 1.0, 0.0])
    assert not has_contrast([1.0, 1.0, 1.0])
    assert not has_contrast([0.0, None, 0.0])
    assert not has_contrast([1.0])


def test_unknown_loss_raises():
    with pytest.raises(ValueError):
        losses.policy_loss("ppo", LOGP, OLD, ADV, MASK, eps_low=0.2, eps_high=0.2, max_len=3)
