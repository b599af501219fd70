"""Sampling G responses per prompt: vLLM in the training process when it is installed and a
GPU is there (weights pushed to it after every optimiser step), HF ``generate`` otherwise."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Generator(Protocol):
    def sample(self, prompts: list[list[int]], n: int) -> list[list[list[int]]]:
        """``n`` responses (token ids, cut after the first EOS) for each prompt."""

    def sync_weights(self, model) -> None:
        """Make the sampler use ``model``'s current weights."""


class HFGenerator:
    """Batched ``model.generate`` with left-padded prompts and plain sampling (no top-k/top-p),
    so the sampling distribution is the policy's own.

    Where a plain ``generate(num_return_sequences=n)`` loses: it repeats every prompt n times
    *before* the prefill, so each prompt is encoded n times. Here each prompt is prefilled once
    (all but its last token, into a ``DynamicCache``), the cache is repeated n times, and
    ``generate`` continues from it: prefill work drops n-fold, the samples are the same
    distribution (greedy output is identical, tests/test_params_generate.py). ``shared_prefill=False``
    gives the plain call (the benchmark's baseline)."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float, shared_prefill: bool = True):
        self.model = model
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.shared_prefill = shared_prefill

    def sync_weights(self, model) -> None:
        self.model = model  # same module object: nothing to copy

    def sample(self, prompts: list[list[int]], n: int, *, greedy: bool = False) -> list[list[list[int]]]:
        import torch

        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            attn[i, width - len(p) :] = 1
        ids, attn = ids.to(device), attn.to(device)
        opts = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.pad_id, eos_token_id=self.eos_id)
        if greedy:
            opts.update(do_sample=False, top_k=None, top_p=None, temperature=None)
        else:
            opts.update(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self.shared_prefill and width > 1 and (n > 1 or not greedy):
                    cache = self._prefill(ids[:, :-1], attn[:, :-1])
                    cache.batch_repeat_interleave(n)
                    out = self.model.generate(
                        input_ids=ids.repeat_interleave(n, 0),
                        attention_mask=attn.repeat_interleave(n, 0),
                        past_key_values=cache,
                        **opts,
                    )
                elif greedy and n > 1:
                    out = self.model.generate(
                        input_ids=ids.repeat_interleave(n, 0), attention_mask=attn.repeat_interleave(n, 0), **opts
                    )
                else:
                    out = self.model.generate(input_ids=ids, attention_mask=attn, num_return_sequences=n, **opts)
        finally:
            self.model.train(was_training)
        new = out[:, width:].tolist()
        return [[cut_at_eos(new[i * n + j], self.eos_id) for j in range(n)] for i in range(len(prompts))]

    def _prefill(self, ids, attn):
        """The KV cache of ``ids`` (left-padded), positions counted from each row's first real
        token as ``generate`` counts them."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        self.model.get_decoder()(
            input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True
        )
        return cache


class VLLMGenerator:
    """vLLM engine inside the training process, sharing the GPU; prefix caching on so the G
    samples of a prompt share its prefill. Weights are loaded into it after each step."""

    def __init__(
        self,
        model_name: str,
        tokenizer,
        *,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        gpu_memory_utilization: float = 0.3,
    ):
        from vllm import LLM

        self.llm = LLM(
            model=model_name, enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization, seed=seed
        )
        self.eos_id = tokenizer.eos_token_id
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def sample(self, prompts: list[list[int]], n: int) -> list[list[list[int]]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=self.temperature, max_tokens=self.max_new_tokens)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [[cut_at_eos(list(c.token_ids), self.eos_id) for c in o.outputs] for o in outs]

    def sync_weights(self, model) -> None:
        weights = list(merged_weights(model).items())
        engine = self.llm.llm_engine
        runner = getattr(engine, "model_executor", None)
        if hasattr(self.llm, "collective_rpc"):  # vLLM >= 0.7
            self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(weights))
        else:
            runner.driver_worker.model_runner.model.load_weights(weights)
        self.llm.reset_prefix_cache()


def merged_weights(model) -> dict:
    """Full-model weights by their Hugging Face names, LoRA adapters merged in when present."""
    if hasattr(model, "merge_adapter"):
        model.merge_adapter()
        try:
            base = model.get_base_model()
            return {
                k.replace(".base_layer", ""): v.detach().clone()
                for k, v in base.state_dict().items()
                if "lora_" not in k
            }
        finally:
            model.unmerge_adapter()
    return {k: v.detach() for k, v in model.state_dict().items()}


def cut_at_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """Tokens up to and including the first EOS (the EOS is an action the policy took)."""
    if eos_id is not None and eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1]
    return tokens


def make_generator(
    kind: str, model, tokenizer, *, model_name: str, device: str, max_new_tokens: int, temperature: float, seed: int
) -> Generator:
    """``vllm`` when asked or (``auto``) when importable on a CUDA device; HF generate otherwise."""
    from importlib.util import find_spec

    from tfgrpo.errors import UserError

    want_vllm = kind == "vllm" or (
        kind == "auto" and device == "cuda" and find_spec("vllm") is not None and model_name != "tiny"
    )
    if want_vllm:
        if find_spec("vllm") is None:
            raise UserError("--generator vllm needs vLLM: pip install 'tfgrpo[vllm]'")
        if device != "cuda":
            raise UserError("--generator vllm needs a CUDA GPU; use --generator hf on CPU")
        return VLLMGenerator(model_name, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return HFGenerator(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature)
