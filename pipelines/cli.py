"""The `hubtune` command line: train, evaluate, predict, import-ct2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from pipelines.errors import HubtuneError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubtune", description="Transfer learning recipes on the Hugging Face stack.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a recipe: hubtune train RECIPE.yaml [key=value ...]")
    train.add_argument("recipe", help="path to a recipe YAML")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.num_train_epochs=1")
    evaluate = commands.add_parser("evaluate", help="metrics of a run folder on its recipe's test split")
    evaluate.add_argument("run", help="run folder written by hubtune train")
    evaluate.add_argument("--split", default="test", choices=["train", "validation", "test"])
    predict = commands.add_parser("predict", help="predict raw inputs with a run folder")
    predict.add_argument("run", help="run folder written by hubtune train")
    predict.add_argument("inputs", nargs="+", help="inputs: texts, or audio file paths for speech runs")
    predict.add_argument("--json", action="store_true", help="print one JSON object per input")
    convert = commands.add_parser("import-ct2", help="convert a faster-whisper (CTranslate2) model to a transformers folder")
    convert.add_argument("source", help="faster-whisper model folder (model.bin, config.json, tokenizer.json)")
    convert.add_argument("target", help="new folder for the WhisperForConditionalGeneration checkpoint")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "train":
        from accelerate import PartialState

        from pipelines.recipe import Recipe

        results = Recipe.from_yaml(args.recipe, args.overrides).run()
        if PartialState().is_main_process:
            headline = {k: v for k, v in results.items() if k.startswith(("test_", "eval_accuracy", "eval_f1"))}
            print(json.dumps(headline, indent=2))
    elif args.command == "evaluate":
        from pipelines.inference import RunModel

        print(json.dumps(RunModel(args.run).evaluate(args.split), indent=2))
    elif args.command == "predict":
        from pipelines.inference import RunModel

        run = RunModel(args.run)
        for prediction in run.predict(args.inputs):
            print(json.dumps(prediction) if args.json else run.format_prediction(prediction))
    elif args.command == "import-ct2":
        from pipelines.ct2_import import import_ct2_whisper

        print(import_ct2_whisper(args.source, args.target))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        _run(args)
    except HubtuneError as error:
        print(f"hubtune: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
