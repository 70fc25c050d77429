"""The strategy `hubtune rank` suggests for its best candidate: a stated rule of thumb. `scripts/bench_rank.py` measured
it on three image sets at two sizes (docs/benchmarks.md, "Checkpoint ranking against fine-tuning"): the suggestion
was the best strategy measured in 2 of 6 cases; at 40 images per class full fine-tuning beat the freezing it
suggested. It is a starting point to try, not a prediction.

Inputs: how far the best candidate's LogME lies above LogME of the label frequencies alone (a constant feature: what
a representation that knows nothing about the inputs scores), and the labelled training examples per class. The rule
follows the usual reading of the transfer-learning literature (few labels: train little; many: train everything;
features that already separate the classes need less change); its thresholds are round numbers, not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

FEW, MANY, ENOUGH = 10, 100, 1000  # labelled examples per class
STRONG_GAIN = 0.5  # LogME above the label-frequency floor (nats per example and label) for "features explain labels"

RULE = (
    f"fewer than {FEW} labelled examples per class: freeze_backbone; {ENOUGH} or more: full; in between, where the "
    f"best candidate's LogME is at least {STRONG_GAIN} above that of the label frequencies alone (its features "
    f"already explain the labels): freeze_backbone under {MANY} per class, train_last_n (adapt.n=2) from {MANY}; "
    "otherwise peft (LoRA), or train_last_n (adapt.n=2) where PEFT has no default LoRA targets for the model (timm "
    "networks). A rule of thumb: right in 2 of 6 measured cases (docs/benchmarks.md)."
)


@dataclass
class Suggestion:
    """A strategy for the best candidate, as recipe overrides, with the numbers the rule read."""

    checkpoint: str
    overrides: list[str]
    logme_gain: float
    per_class: float
    rule: str = RULE

    def line(self) -> str:
        return (
            f"suggested: model.checkpoint={self.checkpoint} {' '.join(self.overrides)} (LogME {self.logme_gain:+.3f} "
            f"above the label frequencies alone, {self.per_class:.0f} labelled examples per class; rule: {self.rule})"
        )


def suggest(checkpoint: str, logme_gain: float, per_class: float, lora_defaults: bool = True) -> Suggestion:
    """The rule (`RULE`) applied to the best candidate's LogME gain and the labelled examples per class;
    `lora_defaults`: whether PEFT knows the modules LoRA adapts in this model, without which a LoRA suggestion would
    not run."""
    strong = logme_gain >= STRONG_GAIN
    if per_class < FEW or (strong and per_class < MANY):
        overrides = ["adapt.strategy=freeze_backbone"]
    elif per_class >= ENOUGH:
        overrides = ["adapt.strategy=full"]
    elif strong or not lora_defaults:
        overrides = ["adapt.strategy=train_last_n", "adapt.n=2"]
    else:
        overrides = ["adapt.strategy=peft", "adapt.peft.method=lora"]
    return Suggestion(checkpoint, overrides, logme_gain, per_class)
