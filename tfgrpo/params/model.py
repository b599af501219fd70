"""The policy: a real model by name or path, or ``tiny`` — a random-initialised Qwen2 with a
character tokenizer made on the spot (no download), for CPU runs, tests and demos."""

from __future__ import annotations

import contextlib
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tfgrpo.errors import UserError

if TYPE_CHECKING:
    import torch

TINY = "tiny"
# Characters the tiny tokenizer knows; anything else maps to <unk>.
TINY_CHARS = string.ascii_lowercase + string.digits + " .,:;=+-*/()?!>'\"\n"
TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def random_qwen2(*, vocab_size: int, max_positions: int = 2048, seed: int | None = None, **shape: Any):
    """A randomly initialised Qwen2 causal LM of the given shape (float32, eager on any device)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, max_position_embeddings=max_positions, tie_word_embeddings=True, **shape
    )
    return Qwen2ForCausalLM(config)


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` over :data:`TINY_CHARS`, built locally with
    the ``tokenizers`` library; ``<pad>``, ``<eos>`` (also BOS) and ``<unk>`` are ids 0, 1, 2."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(TINY_CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<eos>",
        unk_token="<unk>",
        padding_side="right",
    )


def load_policy(
    name: str,
    *,
    seed: int = 0,
    dtype: str = "auto",
    lora_r: int = 0,
    lora_alpha: int | None = None,
    gradient_checkpointing: bool = False,
):
    """``(model, tokenizer)`` for ``name``: ``tiny``, a local directory or a Hugging Face model id
    (``AutoModelForCausalLM.from_pretrained``). With ``lora_r > 0`` the model is wrapped in peft
    LoRA adapters on every linear projection and only those train."""
    import torch

    if name == TINY:
        tokenizer = char_tokenizer()
        model = random_qwen2(vocab_size=len(tokenizer), max_positions=512, seed=seed, **TINY_SHAPE)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = _plain_fast_tokenizer(name) or AutoTokenizer.from_pretrained(name)
            torch_dtype = {
                "auto": "auto",
                "float32": torch.float32,
                "bfloat16": torch.bfloat16,
                "float16": torch.float16,
            }[dtype]
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
        except OSError as e:
            raise UserError(
                f"cannot load model '{name}': {str(e).splitlines()[0]} "
                "(give a local directory or a Hugging Face id available offline)"
            ) from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if lora_r > 0:
        model = with_lora(model, lora_r, lora_alpha or 2 * lora_r)
    return model, tokenizer


def _plain_fast_tokenizer(path: str):
    """A locally saved generic tokenizer (such as the tiny one) loaded as it was saved:
    ``AutoTokenizer`` would pick the model type's tokenizer class and replace its pre-tokenizer."""
    import json

    from transformers import PreTrainedTokenizerFast

    config = Path(path) / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text()).get("tokenizer_class") in (
        "TokenizersBackend",
        "PreTrainedTokenizerFast",
    ):
        return PreTrainedTokenizerFast.from_pretrained(path)
    return None


def with_lora(model, r: int, alpha: int):
    """Wrap ``model`` in peft LoRA adapters (all linear layers except the output head)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def save_pretrained(model, tokenizer, path: str | Path) -> Path:
    """Export the policy (or its LoRA adapters) and tokenizer in Hugging Face format."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def fingerprint(model) -> dict[str, tuple[float, float]]:
    """A few numbers per trainable tensor (its float64 sum and L2 norm), computed on the tensor's
    own device and kept on the CPU: enough to tell whether training moved a weight, without a
    copy of the model (which on a GPU run would also be on the wrong device to compare)."""
    import torch

    with torch.no_grad():
        return {
            n: (
                float(p.detach().sum(dtype=torch.float64)),
                float(torch.linalg.vector_norm(p.detach(), dtype=torch.float64)),
            )
            for n, p in model.named_parameters()
            if p.requires_grad
        }


def trainable_state(model) -> dict[str, "torch.Tensor"]:
    """The trainable parameters by name (LoRA adapters only when peft is in use)."""
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Hugging Face's own progress bars (loading, saving) off while a run trains, restored after:
    the trainer reports through its hooks and never prints."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
