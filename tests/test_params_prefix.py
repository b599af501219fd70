"""The shared-prefix forward equals the naive concatenated forward: log-probs and every gradient."""

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.params.model import random_qwen2  # noqa: E402
from tfgrpo.params.prefix import GroupTokens, group_logprobs  # noqa: E402

VOCAB = 61


@pytest.fixture(scope="module")
def model():
    m = random_qwen2(vocab_size=VOCAB, max_positions=128, seed=0, hidden_size=48, intermediate_size=96,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2).float()
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


def forward_backward(model, groups, shared):
    model.zero_grad(set_to_none=True)
    logps = group_logprobs(model, groups, shared=shared)
    weights = torch.Generator().manual_seed(1)
    loss = sum((lp * g.mask * torch.rand(lp.shape, generator=weights)).sum() for lp, g in zip(logps, groups))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return [lp.detach() for lp in logps], grads


LAYOUTS = {
    "one-group-equal": [(5, [4, 4, 4])],
    "padded-responses": [(9, [6, 1, 3, 6])],
    "prompt-len-1": [(1, [3, 2])],
    "prompts-differ-across-groups": [(3, [2, 5]), (12, [7, 7, 1]), (7, [1, 4, 4, 2, 3])],
    "long-prompt-big-group": [(40, [8, 3, 8, 5, 2, 8, 6, 1])],
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_shared_prefix_equals_naive(model, name):
    groups = make_groups(LAYOUTS[name])
    naive_lp, naive_grads = forward_backward(model, groups, shared=False)
    shared_lp, shared_grads = forward_backward(model, groups, shared=True)
    for a, b, g in zip(naive_lp, shared_lp, groups):
        m = g.mask.bool()
        torch.testing.assert_close(b[m], a[m], rtol=1e-5, atol=1e-5)
    assert naive_grads.keys() == shared_grads.keys() and naive_grads
    for n, ga in naive_grads.items():
        gb = shared_grads[n]
        rel = float((ga - gb).norm() / ga.norm().clamp(min=1e-12))
        assert rel < 1e-5, f"{n}: relative gradient error {rel:.2e}"
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6 * float(ga.abs().max()))


def test_gradient_reaches_prompt_through_every_response(model):
    """Changing only a later response's tokens changes the prompt-embedding gradient: the
    gradient through the expanded prompt K/V sums over the group."""
    groups = make_groups([(6, [3, 3])])
    _, g1 = forward_backward(model, groups, shared=True)
    groups[0].responses[1, :] = (groups[0].responses[1, :] + 1) % VOCAB
    _, g2 = forward_backward(model, groups, shared=True)
    emb = "model.embed_tokens.weight"
    prompt_rows = groups[0].prompt.unique()
    assert not torch.allclose(g1[emb][prompt_rows], g2[emb][prompt_rows])


def test_entropy_is_returned_and_bounded(model):
    groups = make_groups([(4, [3, 2])])
    (lp, ent), = group_logprobs(model, groups, shared=True, with_entropy=True)
    assert ent.shape == lp.shape
    assert (ent >= 0).all() and (ent <= torch.log(torch.tensor(float(VOCAB))) + 1e-4).all()
