"""One test per function of `pipelines.compat`: each fails when upstream renames the private name it wraps or
changes what hubtune relies on it to mean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import Sampler
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForObjectDetection,
    BertConfig,
    BertForSequenceClassification,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    get_scheduler,
)

from pipelines.compat import (
    SamplerHookTrainer,
    attention_implementation,
    auto_class_builds,
    auto_class_model_types,
    cpu_has_amx_bf16,
    dataset_fingerprint,
    feature_frames,
    mark_lr_scheduler_created,
    prepare_inputs,
    set_initialized_flag,
)
from pipelines.training.trainer import HubtuneSeq2SeqTrainer, HubtuneTrainer


def tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3
    )


class Regressor(nn.Module):
    """The smallest model a Trainer trains: a batch of `x` to a loss against `labels`."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, labels=None):
        prediction = self.linear(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(prediction, labels), "logits": prediction}


class Rows(torch.utils.data.Dataset):
    def __init__(self, count: int = 8):
        self.rows = [{"x": torch.tensor([float(i), 1.0]), "labels": torch.tensor(float(i))} for i in range(count)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def trainer_arguments(tmp_path: Path, arguments_class=TrainingArguments, **values) -> TrainingArguments:
    values = {"per_device_train_batch_size": 2, "max_steps": 1, "save_strategy": "no", **values}
    return arguments_class(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True, **values)


def test_set_initialized_flag_decides_what_the_init_pass_draws():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(0.5)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        set_initialized_flag(tensor, name != "classifier.weight")
    for module in model.modules():
        set_initialized_flag(module, False)
    model.initialize_weights()
    changed = {name for name, parameter in model.named_parameters() if not torch.all(parameter == 0.5)}
    assert changed == {"classifier.weight"}

    # A module flagged as initialized is skipped whole, its unflagged tensors too.
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
    set_initialized_flag(model.classifier.weight, False)
    set_initialized_flag(model.classifier, True)
    model.initialize_weights()
    assert torch.all(model.classifier.weight == 0.5)


def test_auto_class_mapping_names_what_it_builds():
    assert auto_class_builds(AutoModelForObjectDetection, AutoConfig.for_model("rt_detr"))
    assert not auto_class_builds(AutoModelForObjectDetection, tiny_bert_config())
    types = auto_class_model_types(AutoModelForObjectDetection)
    assert {"detr", "rt_detr", "deformable_detr"} <= set(types) and "bert" not in types
    assert types == sorted(types)


def test_attention_implementation_follows_loading_and_the_public_setter():
    model = AutoModel.from_config(tiny_bert_config(), attn_implementation="eager")
    assert attention_implementation(model.config) == "eager"
    model.set_attn_implementation("sdpa")
    assert attention_implementation(model.config) == "sdpa"
    assert attention_implementation(object()) is None


def test_dataset_fingerprint_follows_the_data_and_transforms():
    rows = {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    first = dataset_fingerprint(Dataset.from_dict(rows))
    assert first == dataset_fingerprint(Dataset.from_dict(rows))
    assert first != dataset_fingerprint(Dataset.from_dict({**rows, "label": [0, 1, 1]}))
    upper = Dataset.from_dict(rows).map(lambda row: {"text": row["text"].upper()})
    assert dataset_fingerprint(upper) not in (first, "")
    # The feature cache finds a run's features again in a later process only if the fingerprint is the same there.
    script = (
        "from datasets import Dataset; from pipelines.compat import dataset_fingerprint; "
        f"print(dataset_fingerprint(Dataset.from_dict({rows!r})))"
    )
    other_process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == first


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU's flags from Linux's /proc/cpuinfo")
def test_cpu_has_amx_bf16_follows_the_cpu_flags():
    flags = next(
        set(line.split(":", 1)[1].split())
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith(("flags", "Features"))
    )
    assert cpu_has_amx_bf16() is ({"amx_tile", "amx_bf16"} <= flags)


def test_feature_frames_counts_the_logit_positions_of_a_clip():
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_kernel=(10, 16),
        conv_stride=(10, 16),
        num_feat_extract_layers=2,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=8,
    )
    model = Wav2Vec2ForCTC(config).eval()
    for samples in (1600, 2345, 4000):
        with torch.no_grad():
            logits = model(torch.zeros(1, samples)).logits
        assert int(feature_frames(model, torch.tensor([samples]))[0]) == logits.shape[1]


def test_a_marked_scheduler_is_rebuilt_by_the_next_train_call(tmp_path):
    built = []

    class OwnScheduler(Trainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = get_scheduler("linear", optimizer or self.optimizer, 0, num_training_steps)
                built.append(self.lr_scheduler)
                mark_lr_scheduler_created(self)
            return self.lr_scheduler

    trainer = OwnScheduler(model=Regressor(), args=trainer_arguments(tmp_path), train_dataset=Rows())
    trainer.train()
    trainer.args.max_steps = 2
    trainer.train()
    # Unmarked, the second call would keep the first schedule (built for 1 step, its learning rate already 0).
    assert len(built) == 2 and trainer.lr_scheduler is built[1]


def test_prepare_inputs_places_a_nested_batch_as_the_trainer_does(tmp_path):
    trainer = Trainer(model=Regressor(), args=trainer_arguments(tmp_path))
    batch = {"x": torch.ones(2, 2), "labels": [{"boxes": torch.zeros(1, 4)}, {"boxes": torch.ones(3, 4)}]}
    prepared = prepare_inputs(trainer, batch)
    assert torch.equal(prepared["x"], batch["x"]) and prepared["x"].device == trainer.args.device
    assert [target["boxes"].shape for target in prepared["labels"]] == [(1, 4), (3, 4)]
    assert all(target["boxes"].device == trainer.args.device for target in prepared["labels"])


class Backwards(Sampler):
    def __init__(self, count: int):
        self.count = count

    def __iter__(self):
        return iter(range(self.count - 1, -1, -1))

    def __len__(self) -> int:
        return self.count


def test_training_sampler_draws_the_training_batches(tmp_path):
    class BackwardsTrainer(SamplerHookTrainer):
        def training_sampler(self, dataset=None):
            return Backwards(len(dataset))

    args = trainer_arguments(tmp_path, per_device_train_batch_size=4)
    trainer = BackwardsTrainer(model=Regressor(), args=args, train_dataset=Rows())
    drawn = [float(y) for batch in trainer.get_train_dataloader() for y in batch["labels"]]
    assert drawn == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    # Not overridden, the hook gives the Trainer's own sampler (shuffling), not none.
    default = SamplerHookTrainer(model=Regressor(), args=args, train_dataset=Rows())
    assert isinstance(default.training_sampler(default.train_dataset), torch.utils.data.RandomSampler)


@pytest.mark.parametrize("ours, base", [(HubtuneTrainer, Trainer), (HubtuneSeq2SeqTrainer, Seq2SeqTrainer)])
def test_hubtune_trainer_names_shadow_nothing_upstream(ours, base, tmp_path):
    """HubtuneTrainer's own attributes and methods are new names: were upstream to add one, it would silently
    override upstream's. Only the public hooks it means to override are shared."""
    hooks = {
        "compute_loss",
        "create_optimizer",
        "create_scheduler",
        "get_train_dataloader",
        "prediction_step",
        "train",
        "training_step",
    }
    args = trainer_arguments(tmp_path, arguments_class=Seq2SeqTrainingArguments)
    trainer, upstream = ours(model=Regressor(), args=args), base(model=Regressor(), args=args)
    own = (set(vars(trainer)) | set(vars(HubtuneTrainer)) | {"training_sampler"}) - set(vars(upstream))
    shared = {name for name in own if hasattr(upstream, name) and not name.startswith("__")}
    assert shared == hooks
