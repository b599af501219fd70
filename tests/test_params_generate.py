"""HF generation with each prompt prefilled once: the same tokens as the plain batched call."""

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.params.generate import HFGenerator  # noqa: E402
from tfgrpo.params.model import load_policy  # noqa: E402


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny", seed=3)


def prompts(tokenizer):
    texts = ["what is 2+3?", "hi", "add 7 and 1, then say the answer."]  # three lengths: left padding
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_shared_prefill_greedy_equals_plain_generate(policy):
    model, tok = policy
    ps = prompts(tok)
    shared = HFGenerator(model, tok, max_new_tokens=12, temperature=1.0).sample(ps, 3, greedy=True)
    plain = HFGenerator(model, tok, max_new_tokens=12, temperature=1.0, shared_prefill=False).sample(ps, 3, greedy=True)
    assert shared == plain
    assert [len(g) for g in shared] == [3, 3, 3] and all(len(r) >= 1 for g in shared for r in g)


def test_shared_prefill_sampling_draws_the_same_tokens_as_plain_generate(policy):
    """Same logits at every step and the same random draws: with one seed both paths sample
    the same responses."""
    model, tok = policy
    ps = prompts(tok)[:1]
    torch.manual_seed(11)
    a = HFGenerator(model, tok, max_new_tokens=6, temperature=1.0).sample(ps, 5)
    torch.manual_seed(11)
    b = HFGenerator(model, tok, max_new_tokens=6, temperature=1.0, shared_prefill=False).sample(ps, 5)
    assert a == b
