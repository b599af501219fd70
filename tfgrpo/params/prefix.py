"""Shared-prefix forward: each group's prompt is computed once, its G responses against it.

All G responses of a group share one prompt of P tokens. The naive forward runs G sequences
of P + R tokens, O(G·(P+R)) tokens; this one runs the prompt once (one sequence of P tokens,
keeping its keys and values) and then the G responses (R tokens each) with the prompt's K/V
*expanded* G times as their past: O(P + G·R) tokens through every MLP and projection.

Exactness: ``expand`` is a view in the same autograd graph, so the gradient reaching the prompt's
K/V is the sum over the G responses that attend to it, exactly what the naive forward
accumulates over its G copies of the prompt. Response position ids continue from P, and the
log-prob of the first response token comes from the prompt's last position (computed once,
shared by the G responses). Responses are right-padded; padded positions are masked in the
attention and carry no weight in the loss. Groups are never split: a micro-batch is a list of
whole groups, and prompts of different lengths in different groups need no padding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class GroupTokens:
    """One group on the device: ``prompt[P]``, ``responses[G, R]`` right-padded, ``mask[G, R]``,
    and (when training) one advantage per response."""

    prompt: "torch.Tensor"
    responses: "torch.Tensor"
    mask: "torch.Tensor"
    advantages: "torch.Tensor | None" = None


def naive_logprobs(model, group: GroupTokens, *, with_entropy: bool = False):
    """Reference forward: the prompt concatenated in front of every response, G full sequences.
    Returns ``logp[G, R]`` (and ``entropy[G, R]`` when asked)."""
    import torch

    g, r = group.responses.shape
    p = group.prompt.shape[0]
    ids = torch.cat([group.prompt.unsqueeze(0).expand(g, p), group.responses], dim=1)
    attn = torch.cat([torch.ones(g, p, dtype=group.mask.dtype, device=ids.device), group.mask], dim=1)
    logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=r + 1, use_cache=False).logits[:, :-1]
    return _token_logprobs(logits, group.responses, with_entropy)


def shared_prefix_logprobs(model, group: GroupTokens, *, with_entropy: bool = False):
    """Prompt once, responses against its K/V expanded G times. Same result as
    :func:`naive_logprobs`, same gradients, O(P + G·R) tokens."""
    import torch
    from transformers import DynamicCache

    g, r = group.responses.shape
    p = group.prompt.shape[0]
    prompt_out = model(input_ids=group.prompt.unsqueeze(0), use_cache=True, logits_to_keep=1)
    cache = prompt_out.past_key_values
    shared = DynamicCache(
        ddp_cache_data=[(layer.keys.expand(g, -1, -1, -1), layer.values.expand(g, -1, -1, -1)) for layer in cache.layers]
    )
    attn = torch.cat([torch.ones(g, p, dtype=group.mask.dtype, device=group.mask.device), group.mask], dim=1)
    positions = torch.arange(p, p + r, device=group.responses.device).unsqueeze(0).expand(g, r)
    resp_logits = model(
        input_ids=group.responses, attention_mask=attn, position_ids=positions, past_key_values=shared, use_cache=True
    ).logits
    # token 0 is predicted by the prompt's last position, token t by response position t-1
    logits = torch.cat([prompt_out.logits[:, -1:].expand(g, 1, -1), resp_logits[:, :-1]], dim=1)
    return _token_logprobs(logits, group.responses, with_entropy)


def group_logprobs(model, groups: list[GroupTokens], *, shared: bool = True, with_entropy: bool = False):
    """Log-probs of every group of a micro-batch: a list of ``logp[G, R]`` (or of
    ``(logp, entropy)`` pairs), in one autograd graph."""
    fn = shared_prefix_logprobs if shared else naive_logprobs
    return [fn(model, grp, with_entropy=with_entropy) for grp in groups]


def _token_logprobs(logits, tokens, with_entropy: bool):
    import torch

    logits = logits.float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
