"""`adapt.strategy: lp_ft`: LP-FT (Kumar et al. 2022), a linear probe (the head alone) and then fine-tuning from
the probed head, so that a random head does not distort the pretrained features early in fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipelines.adapt.strategies.base import GroupStrategy, ProbeStage
from pipelines.adapt.strategies.freeze_backbone import FreezeBackbone
from pipelines.adapt.strategies.full import all_groups
from pipelines.adapt.strategies.train_last_n import last_n_groups
from pipelines.config import AdaptConfig, factory, option
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups

# The fine-tuning stages LP-FT takes (`adapt.lp_ft.then`): the layer groups each trains, given `adapt.n`.
FINE_TUNING: dict[str, Callable[[LayerGroups, int], set[str]]] = {
    "full": lambda groups, n: all_groups(groups),
    "train_last_n": last_n_groups,
}


@dataclass
class LpFtConfig:
    """LP-FT: a linear probe (head only), then fine-tuning from the probed head."""

    probe_epochs: float = option(1.0, "epochs of the linear probe")
    probe_learning_rate: float = option(1e-3, "the linear probe's learning rate")
    then: str = option("full", "the fine-tuning stage's strategy: full, or train_last_n (with adapt.n)")


@dataclass
class LpFtAdaptConfig(AdaptConfig):
    n: int = option(
        2, "blocks left trainable, counted from the top (lp_ft: in the fine-tuning stage with then: train_last_n)"
    )
    lp_ft: LpFtConfig = factory(LpFtConfig, "LP-FT settings")

    def validate(self) -> None:
        super().validate()
        if self.lp_ft.then not in FINE_TUNING:
            raise HubtuneError(
                f"recipe key 'adapt.lp_ft.then' must be {' or '.join(FINE_TUNING)}, got '{self.lp_ft.then}'"
            )


class LpFt(GroupStrategy):
    name = "lp_ft"
    adapt_config = LpFtAdaptConfig
    settings: LpFtAdaptConfig
    # The groups' schedule would have to span two Trainers.
    gates_layer_groups = False

    def trainable_groups(self, groups: LayerGroups) -> set[str]:
        """The fine-tuning stage's groups; the probe stage trains the head alone."""
        return FINE_TUNING[self.settings.lp_ft.then](groups, self.settings.n)

    def probe_stage(self) -> ProbeStage:
        lp_ft = self.settings.lp_ft
        # The probe takes no learning-rate layout of the recipe: one head, one LR.
        return ProbeStage(FreezeBackbone(AdaptConfig()), lp_ft.probe_epochs, lp_ft.probe_learning_rate)

    def describe(self) -> str:
        lp_ft = self.settings.lp_ft
        then = f"`{lp_ft.then}`" + (f" (top {self.settings.n} blocks)" if lp_ft.then == "train_last_n" else "")
        return f"`{self.name}` (a {lp_ft.probe_epochs:g}-epoch linear probe, then {then})"
