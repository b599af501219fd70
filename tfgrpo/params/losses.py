"""GRPO-family policy losses, one public function per piece.

Notation (docs/params.md): a batch of N sampled responses, token log-probs ``logp[N, T]`` under the
policy being trained, ``old_logp[N, T]`` under the policy that sampled them, ``mask[N, T]``
(1 on response tokens that take part in the loss), one advantage ``A_i`` per response
(from :func:`tfgrpo.rewards.group_advantages`, never recomputed here), log-ratio
``lr_it = logp_it - old_logp_it`` and ratio ``w_it = exp(lr_it)``.

Every loss accepts ``denominator``: the normaliser of the *whole* optimiser batch. A batch
split into micro-batches then gives, summed over the micro-batches, exactly the loss of the
unsplit batch (see :func:`loss_denominator`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: parameter mode is the only place it is used
    import torch

LOSSES: tuple[str, ...] = ("grpo", "dr_grpo", "dapo", "gspo")


def clipped_token_loss(
    logp: "torch.Tensor", old_logp: "torch.Tensor", advantages: "torch.Tensor", eps_low: float, eps_high: float
) -> "torch.Tensor":
    """Per-token clipped surrogate, ``L_it = -min(w_it A_i, clip(w_it, 1-eps_low, 1+eps_high) A_i)``,
    ``w_it = exp(logp_it - old_logp_it)``. Returns ``[N, T]`` (unmasked)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    return -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)


def k3_kl(logp: "torch.Tensor", ref_logp: "torch.Tensor") -> "torch.Tensor":
    """Per-token k3 estimator of KL(policy || reference):
    ``KL_it = exp(ref_it - logp_it) - (ref_it - logp_it) - 1`` (always >= 0). Added as ``beta * KL``."""
    import torch

    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    eps: float = 0.2,
    ref_logp=None,
    beta: float = 0.0,
    denominator: float | None = None,
):
    """GRPO: per-sequence token mean, then mean over sequences,
    ``loss = (1/N) sum_i (sum_t m_it (L_it + beta KL_it)) / (sum_t m_it)``, ``eps_low = eps_high = eps``.
    ``denominator`` replaces N (the number of sequences in the whole batch)."""
    per_token = _with_kl(clipped_token_loss(logp, old_logp, advantages, eps, eps), logp, ref_logp, beta)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / (denominator if denominator is not None else logp.shape[0])


def dr_grpo_loss(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    max_len: int,
    eps: float = 0.2,
    ref_logp=None,
    beta: float = 0.0,
    denominator: float | None = None,
):
    """Dr.GRPO: no length normaliser per sequence, a constant one for the batch,
    ``loss = sum_i sum_t m_it (L_it + beta KL_it) / (N * max_len)``. Its advantages are ``r - mean``
    (``group_advantages(mode="dr_grpo")``, no std scaling). ``denominator`` replaces ``N * max_len``."""
    per_token = _with_kl(clipped_token_loss(logp, old_logp, advantages, eps, eps), logp, ref_logp, beta)
    denom = denominator if denominator is not None else logp.shape[0] * max_len
    return (per_token * mask).sum() / denom


def dapo_loss(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ref_logp=None,
    beta: float = 0.0,
    denominator: float | None = None,
):
    """DAPO: clip-higher and a token-level mean over the whole batch,
    ``loss = sum_i sum_t m_it (L_it + beta KL_it) / sum_i sum_t m_it`` with ``eps_low=0.2, eps_high=0.28``.
    (Dynamic sampling: :func:`tfgrpo.rewards.has_contrast`; overlong shaping: :func:`overlong_penalty`.)
    ``denominator`` replaces the batch's token count."""
    per_token = _with_kl(clipped_token_loss(logp, old_logp, advantages, eps_low, eps_high), logp, ref_logp, beta)
    denom = denominator if denominator is not None else mask.sum().clamp(min=1)
    return (per_token * mask).sum() / denom


def gspo_loss(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    ref_logp=None,
    beta: float = 0.0,
    denominator: float | None = None,
):
    """GSPO: sequence-level, length-normalised importance ratio
    ``s_i = exp((1/|o_i|) sum_t m_it lr_it)``, ``L_i = -min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)``,
    ``loss = (1/N) sum_i (L_i + beta * mean_t KL_it)``. ``denominator`` replaces N."""
    import torch

    lengths = mask.sum(-1).clamp(min=1)
    seq_ratio = torch.exp(((logp - old_logp) * mask).sum(-1) / lengths)
    per_seq = -torch.minimum(seq_ratio * advantages, torch.clamp(seq_ratio, 1 - eps_low, 1 + eps_high) * advantages)
    if ref_logp is not None and beta:
        per_seq = per_seq + beta * (k3_kl(logp, ref_logp) * mask).sum(-1) / lengths
    return per_seq.sum() / (denominator if denominator is not None else logp.shape[0])


def clip_fraction(
    logp, old_logp, advantages, mask, *, eps_low: float, eps_high: float, sequence_level: bool = False
) -> float:
    """Share of tokens (or sequences for GSPO) whose ratio the clip actually cut off:
    ``w < 1-eps_low`` with ``A < 0``, or ``w > 1+eps_high`` with ``A > 0``."""
    import torch

    with torch.no_grad():
        if sequence_level:
            lengths = mask.sum(-1).clamp(min=1)
            ratio = torch.exp(((logp - old_logp) * mask).sum(-1) / lengths)
            adv, m = advantages, torch.ones_like(advantages)
        else:
            ratio = torch.exp(logp - old_logp)
            adv, m = advantages.unsqueeze(-1), mask
        clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
        return float((clipped.float() * m).sum() / m.sum().clamp(min=1))


def loss_denominator(loss: str, masks: list, *, max_len: int) -> float:
    """The whole batch's normaliser for ``loss``, given the masks of all its micro-batches:
    N for grpo and gspo, ``N * max_len`` for dr_grpo, the token count for dapo."""
    n = sum(int(m.shape[0]) for m in masks)
    if loss in ("grpo", "gspo"):
        return float(n)
    if loss == "dr_grpo":
        return float(n * max_len)
    if loss == "dapo":
        return max(1.0, float(sum(float(m.sum()) for m in masks)))
    raise ValueError(f"unknown loss '{loss}'")


def policy_loss(
    name: str,
    logp,
    old_logp,
    advantages,
    mask,
    *,
    eps_low: float,
    eps_high: float,
    max_len: int,
    ref_logp=None,
    beta: float = 0.0,
    denominator: float | None = None,
):
    """Dispatch to the named loss (``grpo`` and ``dr_grpo`` use ``eps_low`` on both sides)."""
    common = dict(ref_logp=ref_logp, beta=beta, denominator=denominator)
    if name == "grpo":
        return grpo_loss(logp, old_logp, advantages, mask, eps=eps_low, **common)
    if name == "dr_grpo":
        return dr_grpo_loss(logp, old_logp, advantages, mask, max_len=max_len, eps=eps_low, **common)
    if name == "dapo":
        return dapo_loss(logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high, **common)
    if name == "gspo":
        return gspo_loss(logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high, **common)
    raise ValueError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")


# -- reward shaping and group selection (plain floats: they act before any tensor exists) ------


def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO soft overlong punishment for a response of ``length`` tokens, L_max = ``max_len``,
    L_c = ``buffer``: ``0`` if ``length <= L_max - L_c``; ``(L_max - L_c - length) / L_c`` inside the
    buffer; ``-1`` beyond ``L_max``. Added to the response's reward."""
    if buffer <= 0 or length <= max_len - buffer:
        return 0.0
    if length <= max_len:
        return (max_len - buffer - length) / buffer
    return -1.0


def _with_kl(per_token, logp, ref_logp, beta: float):
    if ref_logp is None or not beta:
        return per_token
    return per_token + beta * k3_kl(logp, ref_logp)
