"""How many tokens a model's learned position embeddings can number: the hard limit of its input length."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# The names transformers gives a learned absolute position table (BERT's family, BART's, GPT-2's). Models with
# relative or rotary positions (DeBERTa-v3, T5, Llama, ModernBERT) have none and no hard limit.
POSITION_TABLES = ("position_embeddings", "embed_positions", "wpe")


@dataclass(frozen=True)
class PositionLimit:
    """The longest input a model's position table takes, and the table it comes from (for messages)."""

    tokens: int
    table: str  # the module's name, e.g. bert.embeddings.position_embeddings
    rows: int
    skipped: int  # rows before the first position: BART's offset, RoBERTa's padding id and the row below it

    def describe(self) -> str:
        where = f"its position embeddings '{self.table}' have {self.rows} rows (its config's max_position_embeddings)"
        return f"{where}, and position 0 is row {self.skipped}" if self.skipped else where


def position_limit(model: nn.Module) -> PositionLimit | None:
    """The tightest limit among `model`'s learned position tables; None for a model without one."""
    limits = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Embedding) or name.rsplit(".", 1)[-1] not in POSITION_TABLES:
            continue
        # BART's table adds `offset` rows before position 0; RoBERTa's numbers positions from padding_idx + 1.
        skipped = getattr(module, "offset", 0) + (0 if module.padding_idx is None else module.padding_idx + 1)
        limits.append(PositionLimit(module.num_embeddings - skipped, name, module.num_embeddings, skipped))
    return min(limits, key=lambda limit: limit.tokens, default=None)
