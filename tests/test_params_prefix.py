"""The packed forward (and the naive one the trainer also uses) equal a plain model forward:
log-probs and every parameter gradient, for several padding layouts and prompt lengths in one
micro-batch. The reference here is the model's own ``logits`` through ``log_softmax``."""

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.params.head import head_logprobs  # noqa: E402
from tfgrpo.params.model import random_qwen2  # noqa: E402
from tfgrpo.params.prefix import (
    GroupTokens,
    choose_mode,
    group_logprobs,
    naive_logprobs,  # noqa: E402
    packed_logprobs,
    token_counts,
)

VOCAB = 61


@pytest.fixture(scope="module")
def model():
    m = random_qwen2(
        vocab_size=VOCAB,
        max_positions=128,
        seed=0,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ).float()
    m.train()
    return m


def make_groups(layout, seed=0):
    """layout: list of (prompt_len, [response lengths]); responses right-padded to the longest."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for p, lengths in layout:
        r = max(lengths)
        responses = torch.randint(3, VOCAB, (len(lengths), r), generator=gen)
        mask = torch.zeros(len(lengths), r, dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
            responses[i, n:] = 0  # pad id
        groups.append(GroupTokens(torch.randint(3, VOCAB, (p,), generator=gen), responses, mask))
    return groups


def reference_logprobs(model, groups):
    """Each response on its own after its prompt, no padding at all, full logits."""
    out = []
    for g in groups:
        lp = torch.zeros(g.responses.shape)
        for i, n in enumerate(g.mask.sum(-1).tolist()):
            ids = torch.cat([g.prompt, g.responses[i, :n]]).unsqueeze(0)
            logits = model(input_ids=ids).logits[0, len(g.prompt) - 1 : -1].float()
            lp = lp.index_put(
                (torch.tensor([i] * n), torch.arange(n)),
                torch.log_softmax(logits, -1).gather(-1, g.responses[i, :n, None]).squeeze(-1),
            )
        out.append(lp)
    return out


def forward_backward(model, groups, fn):
    model.zero_grad(set_to_none=True)
    logps = fn(model, groups)
    weights = torch.Generator().manual_seed(1)
    loss = sum((lp * g.mask * torch.rand(lp.shape, generator=weights)).sum() for lp, g in zip(logps, groups))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return [lp.detach() for lp in logps], grads


VARIANTS = {
    "packed-rows": lambda m, gs: [lp for lp, _ in packed_logprobs(m, gs, flex=False, one_row=False)],
    "packed-one-row": lambda m, gs: [lp for lp, _ in packed_logprobs(m, gs, flex=False, one_row=True)],
    "naive": lambda m, gs: [naive_logprobs(m, g)[0] for g in gs],
}

LAYOUTS = {
    "one-group-equal": [(5, [4, 4, 4])],
    "padded-responses": [(9, [6, 1, 3, 6])],
    "prompt-len-1": [(1, [3, 2])],
    "prompts-differ-across-groups": [(3, [2, 5]), (12, [7, 7, 1]), (7, [1, 4, 4, 2, 3])],
    "long-prompt-big-group": [(40, [8, 3, 8, 5, 2, 8, 6, 1])],
    "mixed-padding-four-groups": [(17, [1, 9]), (2, [5, 5, 5]), (30, [3, 1, 2, 12]), (6, [8])],
}


def assert_close_grads(got, want):
    assert got.keys() == want.keys() and want
    for n, ga in want.items():
        gb = got[n]
        rel = float((ga - gb).norm() / ga.norm().clamp(min=1e-12))
        assert rel < 1e-5, f"{n}: relative gradient error {rel:.2e}"
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6 * float(ga.abs().max()))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_forward_equals_plain_model_forward(model, name, variant):
    groups = make_groups(LAYOUTS[name])
    ref_lp, ref_grads = forward_backward(model, groups, reference_logprobs)
    lp, grads = forward_backward(model, groups, VARIANTS[variant])
    for a, b, g in zip(ref_lp, lp, groups):
        torch.testing.assert_close(b, a * g.mask, rtol=1e-5, atol=1e-5)  # zero at padding
    assert_close_grads(grads, ref_grads)


def test_eager_attention_takes_an_additive_mask(model):
    groups = make_groups(LAYOUTS["prompts-differ-across-groups"])
    _, want = forward_backward(model, groups, VARIANTS["naive"])
    model.config._attn_implementation = "eager"
    try:
        _, got = forward_backward(model, groups, VARIANTS["packed-rows"])
    finally:
        model.config._attn_implementation = "sdpa"
    assert_close_grads(got, want)


def test_gradient_reaches_prompt_through_every_response(model):
    """Changing only a later response's tokens changes the prompt-embedding gradient: the
    gradient through the shared prompt sums over the group."""
    groups = make_groups([(6, [3, 3])])
    _, g1 = forward_backward(model, groups, VARIANTS["packed-rows"])
    groups[0].responses[1, :] = (groups[0].responses[1, :] + 1) % VOCAB
    _, g2 = forward_backward(model, groups, VARIANTS["packed-rows"])
    emb = "model.embed_tokens.weight"
    prompt_rows = groups[0].prompt.unique()
    assert not torch.allclose(g1[emb][prompt_rows], g2[emb][prompt_rows])


def test_entropy_is_returned_and_bounded(model):
    groups = make_groups([(4, [3, 2])])
    ((lp, ent),) = group_logprobs(model, groups, mode="packed", with_entropy=True)
    assert ent.shape == lp.shape
    assert (ent >= 0).all() and (ent <= torch.log(torch.tensor(float(VOCAB))) + 1e-4).all()
    assert float(ent[1, 2]) == 0.0  # padding


def test_chunked_head_equals_log_softmax_with_bias_and_many_chunks():
    gen = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(16, 37, bias=True)
    hidden = torch.randn(23, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 37, (23,), generator=gen)
    w = torch.rand(23, generator=gen)
    logp, ent = head_logprobs(hidden, head, targets, chunk=5)
    (logp * w).sum().backward()
    got = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    hidden.grad = head.weight.grad = head.bias.grad = None
    full = torch.log_softmax(head(hidden), -1)
    ref = full.gather(-1, targets[:, None]).squeeze(-1)
    (ref * w).sum().backward()
    torch.testing.assert_close(logp, ref)
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1))
    for a, b in zip(got, (hidden.grad, head.weight.grad, head.bias.grad)):
        torch.testing.assert_close(a, b)


def test_auto_packs_long_prompts_and_not_short_ones():
    long = make_groups([(64, [8, 8, 8, 8])])
    short = make_groups([(2, [30, 30, 30, 30])])
    assert token_counts(long) == (4 * 72, 64 + 32)
    assert choose_mode("auto", long) == "packed" and choose_mode(True, long) == "packed"
    assert choose_mode("auto", short) == "naive"
    assert choose_mode("packed", short) == "packed" and choose_mode(False, long) == "naive"
    with pytest.raises(ValueError, match="unknown prefix-sharing mode"):
        choose_mode("sometimes", long)


@pytest.mark.slow
def test_flex_attention_block_mask_forward(model):
    """The FlexAttention layout (all groups in one sequence, block mask) gives the same
    log-probs. CPU flex has no backward, so forward only here; the gpu tests train with it."""
    groups = make_groups(LAYOUTS["mixed-padding-four-groups"])
    with torch.no_grad():
        ref = reference_logprobs(model, groups)
        out = packed_logprobs(model, groups, flex=True)
    assert model.config._attn_implementation == "sdpa"  # switched back after the call
    for (lp, _), r, g in zip(out, ref, groups):
        torch.testing.assert_close(lp, r * g.mask, rtol=1e-5, atol=1e-5)
