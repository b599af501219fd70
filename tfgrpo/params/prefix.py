"""The training forward of a micro-batch of groups: packed (each prompt once) or naive.

All G responses of a group share one prompt of P tokens. The naive forward runs G sequences of
P + R tokens: O(G·(P+R)) tokens through every projection and MLP. The packed forward lays each
group out once, ``[prompt, r1, r2, …, rG]`` with every response at its true length (no padding
inside a group), O(P + Σ|r_i|) tokens, in one model call for the whole micro-batch:

* position ids restart at P for each response, so every response sees the positions it had
  when it was sampled;
* the attention mask lets a prompt token see its prompt causally and a response token see its
  own prompt and itself causally (never another response, never another group);
* the log-prob of a response's first token comes from the prompt's last position (shared by
  the G responses: its gradient is the sum over them, as in the naive forward); token t from
  the response's position t-1.

Mask: FlexAttention with a block mask on CUDA when it is available (all groups back to back in
one sequence; blocks that cross groups are skipped); otherwise SDPA (or eager) with a dense 4-D
mask, one row per group, rows right-padded (padding sees only padding and is never read). The
log-probs and entropies come from :func:`tfgrpo.params.head.head_logprobs`: the output head
only at the positions needed, in chunks, never the full float32 logits.

Exactness: the same tokens see the same keys at the same positions as in the naive forward, so
log-probs and gradients agree to float rounding (tests/test_params_prefix.py).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tfgrpo.params.head import head_logprobs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MODES = ("auto", "packed", "naive")
# auto picks packed when the naive forward would push at least this many times more tokens
AUTO_MIN_RATIO = 1.25


@dataclass
class GroupTokens:
    """One group on the device: ``prompt[P]``, ``responses[G, R]`` right-padded, ``mask[G, R]``,
    and (when training) one advantage per response."""

    prompt: "torch.Tensor"
    responses: "torch.Tensor"
    mask: "torch.Tensor"
    advantages: "torch.Tensor | None" = None


def token_counts(groups: list[GroupTokens]) -> tuple[int, int]:
    """``(naive, packed)``: tokens each forward pushes through the model for ``groups``."""
    naive = sum(g.responses.shape[0] * (g.prompt.shape[0] + g.responses.shape[1]) for g in groups)
    packed = sum(g.prompt.shape[0] + int(g.mask.sum()) for g in groups)
    return naive, packed


def choose_mode(mode: str | bool, groups: list[GroupTokens]) -> str:
    """``packed`` or ``naive`` for this micro-batch. ``auto``: packed when it saves enough tokens
    (long prompts, big groups), naive when the prompts are too short for sharing to pay for the
    mask. ``True``/``False`` (the old boolean option) mean auto/naive."""
    if mode is True:
        mode = "auto"
    elif mode is False:
        mode = "naive"
    if mode not in MODES:
        raise ValueError(f"unknown prefix-sharing mode '{mode}' (choose from {', '.join(MODES)})")
    if mode != "auto":
        return mode
    naive, packed = token_counts(groups)
    return "packed" if naive >= AUTO_MIN_RATIO * packed else "naive"


def group_logprobs(model, groups: list[GroupTokens], *, mode: str | bool = "auto", with_entropy: bool = False):
    """Log-probs of every group of a micro-batch: a list of ``logp[G, R]`` (or of
    ``(logp, entropy)`` pairs; zero at padding), in one autograd graph."""
    if choose_mode(mode, groups) == "packed":
        out = packed_logprobs(model, groups)
    else:
        out = [naive_logprobs(model, g) for g in groups]
    return out if with_entropy else [lp for lp, _ in out]


def naive_logprobs(model, group: GroupTokens):
    """Reference forward: the prompt concatenated in front of every response, G full sequences.
    Returns ``(logp[G, R], entropy[G, R])``."""
    import torch

    g, r = group.responses.shape
    p = group.prompt.shape[0]
    ids = torch.cat([group.prompt.unsqueeze(0).expand(g, p), group.responses], dim=1)
    attn = torch.cat([torch.ones(g, p, dtype=group.mask.dtype, device=ids.device), group.mask], dim=1)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    keep = group.mask.bool()
    rows, cols = keep.nonzero(as_tuple=True)
    h = hidden[rows, cols + p - 1]  # token t of a response is predicted at position p + t - 1
    logp, ent = head_logprobs(h, model.get_output_embeddings(), group.responses[rows, cols])
    return _scatter(logp, keep), _scatter(ent, keep)


def packed_logprobs(model, groups: list[GroupTokens], *, flex: bool | None = None, one_row: bool | None = None):
    """Every group of the micro-batch packed (see the module doc). Same result as
    :func:`naive_logprobs` for each group, same gradients. ``flex`` (default: on CUDA when
    available) and ``one_row`` (default: with flex) override the choice of kernel and layout."""
    if flex is None:
        flex = flex_available(model, groups[0].prompt.device)
    layout = _Layout(groups, one_row=flex if one_row is None else one_row)
    ids, pos = layout.tensors()
    if flex:
        mask = layout.block_mask()
        impl = _attn_implementation(model, "flex_attention")
    else:
        mask = layout.dense_mask(model)
        impl = contextlib.nullcontext()
    with impl:
        hidden = model.get_decoder()(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False
        ).last_hidden_state
    h = hidden.reshape(-1, hidden.shape[-1])[layout.source]
    logp, ent = head_logprobs(h, model.get_output_embeddings(), layout.targets)
    out, start = [], 0
    for g in groups:
        keep = g.mask.bool()
        n = int(keep.sum())
        out.append((_scatter(logp[start : start + n], keep), _scatter(ent[start : start + n], keep)))
        start += n
    return out


class _Layout:
    """Token ids, position ids, segment labels and gather indices of a packed micro-batch.

    Each token gets ``seg`` (its group; padding: a label of its own) and ``resp`` (0 for the
    prompt, i+1 for response i). Query q may attend key k iff ``seg[q] == seg[k]``,
    ``k <= q`` and ``resp[k] in (0, resp[q])``."""

    def __init__(self, groups: list[GroupTokens], *, one_row: bool):
        import torch

        self.device = groups[0].prompt.device
        rows: list[list[tuple]] = [[] for _ in range(1 if one_row else len(groups))]
        source, targets = [], []
        pieces_per_row: list[list] = [[] for _ in rows]
        for k, g in enumerate(groups):
            row = 0 if one_row else k
            offset = sum(int(piece[0].shape[0]) for piece in pieces_per_row[row])
            p = g.prompt.shape[0]
            lengths = g.mask.sum(-1).tolist()
            pieces = [(g.prompt, torch.arange(p, device=self.device), k, 0)]
            start = offset + p
            for i, n in enumerate(lengths):
                n = int(n)
                tokens = g.responses[i, :n]
                pieces.append((tokens, torch.arange(p, p + n, device=self.device), k, i + 1))
                if n:
                    # token 0 from the prompt's last position, token t from response position t-1
                    src = torch.arange(start - 1, start + n - 1, device=self.device)
                    src[0] = offset + p - 1
                    source.append((row, src))
                    targets.append(tokens)
                start += n
            pieces_per_row[row].extend(pieces)
        self.rows = pieces_per_row
        self.width = max(sum(int(pc[0].shape[0]) for pc in row) for row in pieces_per_row)
        self.source = torch.cat([r * self.width + s for r, s in source])
        self.targets = torch.cat(targets)

    def tensors(self):
        import torch

        ids, pos, seg, resp = [], [], [], []
        pad_label = -1
        for row in self.rows:
            length = sum(int(pc[0].shape[0]) for pc in row)
            extra = self.width - length
            ids.append(torch.cat([pc[0] for pc in row] + [row[0][0].new_zeros(extra)]))
            pos.append(torch.cat([pc[1] for pc in row] + [torch.arange(extra, device=self.device)]))
            seg.append(
                torch.cat([torch.full_like(pc[0], pc[2]) for pc in row] + [row[0][0].new_full((extra,), pad_label)])
            )
            resp.append(torch.cat([torch.full_like(pc[0], pc[3]) for pc in row] + [row[0][0].new_zeros(extra)]))
        self.seg, self.resp = torch.stack(seg), torch.stack(resp)
        return torch.stack(ids), torch.stack(pos)

    def allowed(self, seg_q, seg_k, resp_q, resp_k, q_idx, k_idx):
        return (seg_q == seg_k) & (k_idx <= q_idx) & ((resp_k == 0) | (resp_k == resp_q))

    def dense_mask(self, model):
        """``[rows, 1, T, T]``: boolean for SDPA, additive float for eager attention."""
        import torch

        idx = torch.arange(self.width, device=self.device)
        ok = self.allowed(
            self.seg[:, :, None],
            self.seg[:, None, :],
            self.resp[:, :, None],
            self.resp[:, None, :],
            idx[:, None],
            idx[None, :],
        ).unsqueeze(1)
        if getattr(model.config, "_attn_implementation", "sdpa") == "eager":
            dtype = model.get_output_embeddings().weight.dtype
            return torch.zeros(ok.shape, dtype=dtype, device=self.device).masked_fill_(~ok, torch.finfo(dtype).min)
        return ok

    def block_mask(self):
        from torch.nn.attention.flex_attention import create_block_mask

        seg, resp = self.seg[0], self.resp[0]

        def mask_mod(b, h, q, k):
            return self.allowed(seg[q], seg[k], resp[q], resp[k], q, k)

        return create_block_mask(mask_mod, B=None, H=None, Q_LEN=self.width, KV_LEN=self.width, device=self.device)


def flex_available(model, device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
        from transformers.integrations.flex_attention import flex_attention_forward  # noqa: F401
    except ImportError:
        return False
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager", "flex_attention")


@contextlib.contextmanager
def _attn_implementation(model, name: str):
    """Switch the attention function for one call (every layer reads ``config._attn_implementation``
    at forward time); generation keeps the model's own."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def _scatter(values, keep):
    """``[G, R]`` zeros with ``values`` (row-major over ``keep``) at the kept positions."""
    return values.new_zeros(keep.shape).masked_scatter(keep, values)
