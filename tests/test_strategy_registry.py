"""Adapt strategies come from a registry: the built-in ones through entry points, a research one registered at run
time trains without any change to the library, and the recipe layer and the model card ask the strategy, not
its name."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

import pytest
import torch
import yaml
from conftest import make_recipe_values
from safetensors.torch import load_file

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.adapt.strategies import Strategy, register_strategy, strategy_for
from pipelines.config import AdaptConfig, dump_recipe_config, option
from pipelines.registry import STRATEGIES
from pipelines.runs.card import model_card

BUILT_IN = {"full", "freeze_backbone", "train_last_n", "peft", "lp_ft"}


@dataclass
class BiasOnlyAdaptConfig(AdaptConfig):
    train_head: bool = option(True, "train the task head with the biases")


class BiasOnly(Strategy):
    """BitFit (Ben Zaken et al. 2022): only the bias terms train, and the new head."""

    name = "bias_only"
    adapt_config = BiasOnlyAdaptConfig
    settings: BiasOnlyAdaptConfig

    def apply(self, model, groups, peft_task_type):
        for name, parameter in model.named_parameters():
            head = self.settings.train_head and groups.by_parameter[name] == "head"
            parameter.requires_grad_(name.endswith(".bias") or head)
        return model

    def describe(self) -> str:
        return f"`{self.name}` (BitFit: the bias terms and the head)"


@pytest.fixture(scope="module")
def bias_only():
    register_strategy(BiasOnly)
    yield BiasOnly
    STRATEGIES.unregister(BiasOnly.name)


@pytest.fixture(scope="module")
def bias_only_run(bias_only, tiny_bert, sentiment_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bias-only") / "run"
    values = make_recipe_values(tiny_bert, sentiment_files, run_dir)
    values["adapt"] = {"strategy": "bias_only"}
    recipe = Recipe.from_dict(values)
    return recipe, recipe.run()


def test_every_entry_point_names_a_strategy_of_that_name():
    points = {point.name: point for point in entry_points(group="hubtune.strategies")}
    assert set(points) == BUILT_IN
    for name, point in points.items():
        strategy = STRATEGIES.get(name)
        assert isinstance(strategy, type) and issubclass(strategy, Strategy)
        assert strategy.name == name and point.value.endswith(f":{strategy.__name__}")
        assert issubclass(strategy.adapt_config, AdaptConfig)


def test_what_the_built_in_strategies_tell():
    assert set(STRATEGIES.where(lambda strategy: strategy.saves_adapter)) == {"peft"}
    assert set(STRATEGIES.where(lambda strategy: strategy.frozen_backbone)) == {"freeze_backbone"}
    assert set(STRATEGIES.where(lambda strategy: strategy.gates_layer_groups)) == {
        "full",
        "freeze_backbone",
        "train_last_n",
    }


def test_a_strategy_registered_at_run_time_is_a_recipe_value_with_its_own_keys(bias_only, recipe_values):
    config = load_recipe_config(values={**recipe_values, "adapt": {"strategy": "bias_only", "train_head": False}})
    assert type(config.adapt) is BiasOnlyAdaptConfig and config.adapt.train_head is False
    with pytest.raises(HubtuneError, match="recipe key 'adapt.train_head' must be true or false"):
        load_recipe_config(values={**recipe_values, "adapt": {"strategy": "bias_only", "train_head": "no"}})
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values={**recipe_values, "adapt": {"strategy": "bias_onyl"}})
    assert str(caught.value) == (
        "unknown adapt strategy 'bias_onyl' in recipe key 'adapt.strategy'; did you mean 'bias_only'?"
    )
    # The facts a strategy does not claim keep the shared keys that need them away from it.
    with pytest.raises(HubtuneError, match="'adapt.unfreeze_schedule' gates layer groups; it does not apply to"):
        load_recipe_config(
            values={**recipe_values, "adapt": {"strategy": "bias_only", "unfreeze_schedule": {"every": 1}}}
        )


def test_a_registered_strategy_trains_only_the_parameters_it_chose(bias_only_run, tiny_bert):
    recipe, results = bias_only_run
    assert results["test_accuracy"] >= 0.9, results
    before = load_file(str(tiny_bert / "model.safetensors"))
    after = load_file(str(recipe.output_dir / "model.safetensors"))
    assert before.keys() == after.keys()
    chosen = {name for name in before if name.endswith(".bias") or name.startswith("classifier.")}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed <= chosen, sorted(changed - chosen)
    assert {"classifier.weight", "classifier.bias"} <= changed
    assert any(name.startswith("bert.encoder.") for name in changed), "no backbone bias trained"
    weights = {name for name in before if not name.endswith(".bias") and not name.startswith("classifier.")}
    assert weights and not weights & changed
    trained = sum(before[name].numel() for name in chosen)
    assert results["trainable_parameters"] == trained


def card_of(run_dir, config) -> tuple[dict, str]:
    card = model_card(run_dir, config, "text-classification")
    return yaml.safe_load(card.split("---")[1]), card


def test_the_model_card_names_the_strategy_it_asks_the_registry_for(bias_only_run):
    recipe, _ = bias_only_run
    metadata, card = card_of(recipe.output_dir, recipe.config)
    assert "bias_only" in metadata["tags"] and metadata["library_name"] == "transformers"
    assert "- Adaptation: `bias_only` (BitFit: the bias terms and the head);" in card


@pytest.mark.parametrize(("strategy", "library"), [("full", "transformers"), ("peft", "peft")])
def test_push_dry_run_card_of_a_full_and_a_peft_run(trained_run, tmp_path, strategy, library):
    from pipelines.commands.cli import main

    run = trained_run(strategy)
    out = tmp_path / "upload"
    assert main(["push", str(run.run_dir), "--repo-id", "me/tiny", "--dry-run", str(out)]) == 0
    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == library and strategy in metadata["tags"]
    words = strategy_for(run.recipe.config.adapt).describe()
    assert f"- Adaptation: {words};" in card
    assert ("PeftModel.from_pretrained" in card) is (strategy == "peft")
    if strategy == "peft":
        assert words.startswith("`peft` (method=lora")


def test_keys_of_another_strategy_are_checked_and_left_out(recipe_values, tmp_path, caplog):
    """A recipe may keep the settings of the strategies it switches to by an override."""
    adapt = {"strategy": "full", "n": 1, "peft": {"method": "lora", "target_modules": ["query"]}}
    with caplog.at_level(logging.INFO, logger="pipelines.config.loading"):
        config = load_recipe_config(values={**recipe_values, "adapt": adapt})
    assert type(config.adapt) is AdaptConfig
    unused = [record.getMessage() for record in caplog.records if "leaves it unused" in record.getMessage()]
    assert len(unused) == 2 and "'adapt.peft' is for strategy peft" in unused[1]
    dump_recipe_config(config, tmp_path / "recipe.yaml")
    saved = yaml.safe_load((tmp_path / "recipe.yaml").read_text())["adapt"]
    assert saved == dataclasses.asdict(AdaptConfig())

    switched = load_recipe_config(values={**recipe_values, "adapt": adapt}, overrides=["adapt.strategy=peft"])
    assert switched.adapt.peft.target_modules == ["query"]
    with pytest.raises(HubtuneError, match=r"unknown recipe key 'adapt.peft.rr'; did you mean 'adapt.peft.r'\?"):
        load_recipe_config(values={**recipe_values, "adapt": {"strategy": "full", "peft": {"rr": 4}}})
    with pytest.raises(HubtuneError, match="recipe key 'adapt.n' must be int"):
        load_recipe_config(values={**recipe_values, "adapt": {"strategy": "full", "n": "two"}})
    with pytest.raises(HubtuneError, match=r"unknown recipe key 'adapt.nn'; did you mean 'adapt.n'\?"):
        load_recipe_config(values={**recipe_values, "adapt": {"strategy": "full", "nn": 1}})


def test_a_users_recipe_with_lora_settings_beside_another_strategy_still_loads(recipe_values, caplog):
    """The shipped recipes held `adapt.lora` next to `strategy: full`, for switching by an override."""
    lora = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}
    with caplog.at_level(logging.WARNING, logger="pipelines.config.legacy"):
        config = load_recipe_config(values={**recipe_values, "adapt": {"strategy": "full", "n": 2, "lora": lora}})
    assert config.adapt == AdaptConfig()
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "'adapt.strategy: full' does not use" in warning and "'adapt.strategy: peft'" in warning
    switched = load_recipe_config(
        values={**recipe_values, "adapt": {"strategy": "full", "lora": lora}}, overrides=["adapt.strategy=lora"]
    )
    assert switched.adapt.strategy == "peft" and switched.adapt.peft.target_modules == ["query", "value"]
