"""Padding-free training: a batch's token sequences packed into one row, told apart by restarting position ids.

transformers 5 keeps packed sequences apart by their position ids in its flash-attention path (varlen kernels,
any model that passes `position_ids` to its attention), and under sdpa and eager only in models that build a causal
mask (Llama, Qwen2, Mistral...). Bidirectional encoders such as BERT, RoBERTa and ModernBERT attend across the
whole row under sdpa, eager and flex attention, so packing them needs `model.attn_implementation:
flash_attention_2` (a CUDA GPU and the flash-attn package). `check_packing` finds out which case a model is in.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorWithFlattening

from pipelines.compat import attention_implementation
from pipelines.errors import HubtuneError

FLASH_ATTENTION = "flash_attention"
PROBE_LENGTH = 6  # tokens per probe sequence: short enough to cost nothing, long enough to attend across


class TokenFlattening(DataCollatorWithFlattening):
    """transformers' packing collator with every token's label kept: it blanks each sequence's first label, which
    a causal LM's shifted loss needs and a token classifier does not."""

    def __call__(self, features: list[dict[str, Any]], return_tensors: Any = None, separator_id: Any = None) -> Any:
        batch = super().__call__(features, return_tensors, separator_id)
        batch["labels"] = torch.tensor([[label for feature in features for label in feature["labels"]]])
        return batch


def _probe_ids(model: Any, offset: int) -> list[int]:
    # Ordinary vocabulary ids (past the special tokens at the start of most vocabularies).
    return [(offset + 7 * i) % model.config.vocab_size for i in range(PROBE_LENGTH)]


def _logits(model: Any, input_ids: list[int], position_ids: list[int] | None = None) -> torch.Tensor:
    inputs = {"input_ids": torch.tensor([input_ids], device=model.device)}
    if position_ids is not None:
        inputs["position_ids"] = torch.tensor([position_ids], device=model.device)
    return model(**inputs).logits[0].float()


def _position_start(model: Any) -> int:
    """The position id the model gives a sequence's first token itself: 0, or padding_idx + 1 for RoBERTa-like
    embeddings; packed sequences must restart at the same number."""
    ids = _probe_ids(model, 11)
    own = _logits(model, ids)
    pad = model.config.pad_token_id
    for start in (0,) + ((pad + 1,) if isinstance(pad, int) else ()):
        if torch.allclose(_logits(model, ids, list(range(start, start + len(ids)))), own, rtol=1e-3, atol=1e-5):
            return start
    raise HubtuneError(
        f"'data.padding_free' needs position ids the model accepts, but {type(model).__name__} numbers its "
        "positions in a way hubtune cannot reproduce; drop 'data.padding_free'"
    )


@torch.no_grad()
def check_packing(model: Any) -> int:
    """Refuse a model whose attention would mix packed sequences; return the first position id of a sequence.

    Packed rows [A, B] and [A, B'] must give A the same logits: B must not reach A. Flash attention runs on a GPU
    only, so for it this is taken on transformers' word and the position check runs under sdpa.
    """
    if getattr(model.config, "use_cache", False):
        # A cache object in the forward pass turns off transformers' packed-sequence detection; training needs none.
        model.config.use_cache = False
    implementation = attention_implementation(model.config) or "eager"
    was_training = model.training
    model.eval()
    try:
        if implementation.startswith(FLASH_ATTENTION):
            model.set_attn_implementation("sdpa")
            try:
                return _position_start(model)
            finally:
                model.set_attn_implementation(implementation)
        start = _position_start(model)
        first = _probe_ids(model, 11)
        positions = list(range(start, start + PROBE_LENGTH)) * 2
        packed = _logits(model, first + _probe_ids(model, 23), positions)[:PROBE_LENGTH]
        changed = _logits(model, first + _probe_ids(model, 31), positions)[:PROBE_LENGTH]
        if not torch.allclose(packed, changed, rtol=1e-4, atol=1e-6):
            raise HubtuneError(
                f"'data.padding_free': {type(model).__name__} with attention '{implementation}' lets packed sentences "
                "attend to each other (transformers keeps them apart for bidirectional encoders only in flash "
                "attention); set 'model.attn_implementation=flash_attention_2' (a CUDA GPU with flash-attn) or drop "
                "'data.padding_free'"
            )
        return start
    finally:
        model.train(was_training)
