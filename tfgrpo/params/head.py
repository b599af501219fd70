"""Token log-probs and entropies from hidden states, the output head applied in chunks.

A training forward needs, at each response position, ``log p(token)`` (with its gradient) and
the entropy of the next-token distribution (a metric, no gradient). Materialising the logits of
every position in float32 costs ``N·V·4`` bytes (10 GB for 16 responses of 1,024 tokens with a
152k vocabulary), and autograd would keep them for the backward. :class:`ChunkedHeadLogprobs`
does what fused linear-cross-entropy kernels do, in plain torch so that it runs on CPU and CUDA
alike: the forward computes the logits of ``chunk`` rows at a time (the matmul in the weights'
dtype, then float32, as the model's own head does), keeps only ``log p(token)``, the
log-sum-exp and the entropy; the backward recomputes each chunk's logits and forms
``d logits = g · (onehot - softmax)`` for it. Peak extra memory is one chunk of logits.

(Liger and cut-cross-entropy provide fused kernels of this kind, but in Triton only: CUDA.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LOGIT_BUDGET = 1 << 26  # float32 logits per chunk (256 MB): ~440 rows for a 152k vocabulary


def chunk_rows(vocab: int, budget: int = LOGIT_BUDGET) -> int:
    return max(16, budget // max(1, vocab))


def _function():
    import torch

    class ChunkedHeadLogprobs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, chunk):
            n = hidden.shape[0]
            logp = hidden.new_empty(n, dtype=torch.float32)
            entropy = hidden.new_empty(n, dtype=torch.float32)
            lse = hidden.new_empty(n, dtype=torch.float32)
            for s in range(0, n, chunk):
                logits = _logits(hidden[s : s + chunk], weight, bias)
                lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
                logp[s : s + chunk] = logits.gather(-1, targets[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
                probs = torch.exp(logits - lse[s : s + chunk, None])
                entropy[s : s + chunk] = lse[s : s + chunk] - (probs * logits).sum(-1)
            ctx.save_for_backward(hidden, weight, bias, targets, lse)
            ctx.chunk = chunk
            ctx.mark_non_differentiable(entropy)
            return logp, entropy

        @staticmethod
        def backward(ctx, grad_logp, _grad_entropy):
            hidden, weight, bias, targets, lse = ctx.saved_tensors
            chunk = ctx.chunk
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            need_b = bias is not None and ctx.needs_input_grad[2]
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s : s + chunk]
                # d logp_t / d logits = onehot(target) - softmax
                d = -torch.exp(_logits(h, weight, bias) - lse[s : s + chunk, None])
                d.scatter_add_(-1, targets[s : s + chunk, None], torch.ones_like(d[:, :1]))
                d.mul_(grad_logp[s : s + chunk, None].float())
                if need_h:
                    grad_h[s : s + chunk] = (d.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w.addmm_(d.t(), h.float())
                if need_b:
                    grad_b += d.sum(0)
            return (
                grad_h,
                grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None,
                None,
                None,
            )

    return ChunkedHeadLogprobs


def _logits(h, weight, bias):
    import torch

    out = torch.nn.functional.linear(h, weight, bias)
    return out.float()


_FN = None


def head_logprobs(hidden: "torch.Tensor", head, targets: "torch.Tensor", *, chunk: int | None = None):
    """``(logp[N], entropy[N])`` of ``targets[N]`` given ``hidden[N, H]`` and the output head
    (an ``nn.Linear``); ``logp`` carries gradients to ``hidden`` and the head's weight."""
    global _FN
    if _FN is None:
        _FN = _function()
    weight, bias = head.weight, getattr(head, "bias", None)
    rows = chunk or chunk_rows(weight.shape[0])
    return _FN.apply(hidden, weight, bias, targets, rows)
