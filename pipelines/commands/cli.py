"""The `hubtune` command line: train, evaluate, predict, compare, rank, search, export, push, recipe-keys, import-ct2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pipelines.errors import HubtuneError, RunFailed, Terminated

# Commands that may read checkpoints or datasets from the Hub (or push to it).
HUB_COMMANDS = ("train", "evaluate", "predict", "compare", "rank", "search", "export", "push")


SEARCH_EPILOG = """\
recipe keys of the search section (besides the ranges, e.g. training.learning_rate: {low: 1e-5, high: 1e-3}):
  direction: minimize | maximize          default: from the metric (loss, wer, cer are minimised)
  sampler: {name: tpe | random, seed: N}  default: tpe, the recipe's seed
  pruner: {name: median | hyperband | none, ...}   default: none; needs evaluations during training
    median: n_startup_trials (5), n_warmup_steps (0), interval_steps (1), n_min_trials (1)
    hyperband: min_resource (1), max_resource (auto), reduction_factor (3); resources are training steps
  heartbeat: {interval: 10, grace_period: 60, retries: 1}  a trial left running by a killed worker is failed
    after grace_period seconds without a heartbeat and queued again (database storages only)

Workers: run the same command on one --storage (and --out) in several processes or machines; e.g. one per GPU:
  CUDA_VISIBLE_DEVICES=0 hubtune search R.yaml --storage URL &  CUDA_VISIBLE_DEVICES=1 hubtune search R.yaml ...
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hubtune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="hubtune", description="Transfer learning recipes on the Hugging Face stack.")
    parser.add_argument("--version", action="version", version=f"hubtune {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a recipe: hubtune train RECIPE.yaml [key=value ...]")
    train.add_argument("recipe", help="path to a recipe YAML")
    train.add_argument(
        "overrides", nargs="*", metavar="key=value", help="optional dotted overrides, e.g. training.num_train_epochs=1"
    )
    evaluate = commands.add_parser("evaluate", help="metrics of a run folder on a split of its recipe, or on new data")
    evaluate.add_argument("run", help="run folder written by hubtune train")
    scored = evaluate.add_mutually_exclusive_group()
    scored.add_argument("--split", default="test", choices=["train", "validation", "test"])
    scored.add_argument("--data", help="a labelled file or folder in the recipe's format, scored instead of a split")
    predict = commands.add_parser("predict", help="predict raw inputs with a run folder")
    predict.add_argument("run", help="run folder written by hubtune train")
    predict.add_argument("inputs", nargs="*", help="texts (or files/folders for image and audio runs); - reads stdin")
    predict.add_argument("--file", action="append", default=[], help="read inputs from a file, one per line")
    predict.add_argument(
        "--data", help="predict every row of a data file or folder in the recipe's format (needs --output)"
    )
    predict.add_argument("--column", help="with --data: the input column (default: the recipe's)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--json", action="store_true", help="print one JSON object per input")
    predict.add_argument("--output", help="write one JSON object per input to this .jsonl file")
    predict.add_argument(
        "--draw",
        metavar="DIR",
        help="object detection: each image with its boxes; segmentation: its mask PNG and a coloured overlay",
    )
    predict.add_argument(
        "--overwrite", action="store_true", help="replace the --output (or --draw) files if they exist"
    )
    predict.add_argument(
        "--timestamps",
        action="store_true",
        help="speech recognition: Whisper's segments, or CTC's words, with their start and end in seconds",
    )
    compare = commands.add_parser("compare", help="transfer report: pretrained vs random initialisation")
    compare.add_argument("recipe", help="path to a recipe YAML")
    compare.add_argument(
        "overrides", nargs="*", metavar="key=value", help="optional dotted overrides, e.g. training.num_train_epochs=1"
    )
    compare.add_argument("--sizes", default="", help="comma-separated training-set sizes, e.g. 20,100,1000")
    compare.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[],
        metavar="SEED",
        help="run every cell once per seed (e.g. --seeds 42 43 44): mean ± std, and a paired bootstrap 95%% interval "
        "of the gain; negative transfer is flagged only when that interval lies below zero (default: the recipe's seed)",
    )
    compare.add_argument("--metric", help="test metric to compare (default: the task's, e.g. accuracy)")
    compare.add_argument("--out", help="report folder (default: runs/<name>-compare)")
    rank = commands.add_parser("rank", help="rank candidate checkpoints for a recipe before training (LogME, LEEP)")
    rank.add_argument("recipe", help="path to a recipe YAML")
    rank.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="optional dotted overrides of the recipe's values (before --checkpoints)",
    )
    rank.add_argument(
        "--checkpoints", nargs="+", required=True, help="candidate checkpoints: Hub ids, folders, timm ids"
    )
    rank.add_argument("--samples", type=int, default=500, help="training examples per forward pass (default 500)")
    rank.add_argument("--out", help="report folder (default: runs/<name>-rank)")
    search = commands.add_parser(
        "search",
        help="hyperparameter search with Optuna over the recipe's search section",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SEARCH_EPILOG,
    )
    search.add_argument("recipe", nargs="?", help="path to a recipe YAML with a 'search' section")
    search.add_argument(
        "overrides", nargs="*", metavar="key=value", help="optional dotted overrides of the recipe's values"
    )
    search.add_argument(
        "--trials",
        type=int,
        default=10,
        help="finished (complete or pruned) trials of all workers together, each a full run (default 10)",
    )
    search.add_argument("--metric", help="validation metric to optimise (default: the task's, e.g. accuracy)")
    search.add_argument("--out", help="search folder, shared by all workers (default: runs/<name>-search)")
    search.add_argument(
        "--storage",
        metavar="URL",
        help="the study's storage, shared by workers: a database URL (sqlite:///PATH, postgresql://...) or "
        "journal:PATH (a file on a shared filesystem); default: sqlite in the search folder",
    )
    search.add_argument(
        "--launch",
        metavar="COMMAND",
        help="run each trial as COMMAND -m pipelines train ..., e.g. 'accelerate launch --config_file F' "
        "(no pruning then)",
    )
    search.add_argument(
        "--report", metavar="DIR", help="rewrite search folder DIR's summary from its study, and run nothing"
    )
    export = commands.add_parser("export", help="write a run as a standalone model folder or an ONNX graph")
    export.add_argument("run", help="run folder written by hubtune train")
    export.add_argument("out", help="new folder for the standalone model")
    export.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the base weights")
    export.add_argument(
        "--format",
        choices=["transformers", "onnx"],
        default="transformers",
        help="transformers: a from_pretrained folder; onnx: model.onnx for onnxruntime (a LoRA adapter merged)",
    )
    push = commands.add_parser("push", help="upload a run folder with its model card to the Hub")
    push.add_argument("run", help="run folder written by hubtune train")
    push.add_argument("--repo-id", help="Hub repository (default: the recipe's hub.repo_id)")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None)
    visibility.add_argument("--public", dest="private", action="store_false")
    push.add_argument(
        "--dry-run", metavar="DIR", help="write what would be uploaded to DIR and list it, instead of uploading"
    )
    push.add_argument("--revision", help="the branch to commit to (made when missing; default: main)")
    push.add_argument("--commit-message", help="the commit's message (default: 'hubtune run NAME')")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    keys = commands.add_parser("recipe-keys", help="every recipe key of a task, with its help and default")
    keys.add_argument("task", help="a task name, e.g. text-classification")
    convert = commands.add_parser(
        "import-ct2", help="convert a faster-whisper (CTranslate2) model to a transformers folder"
    )
    convert.add_argument("source", help="faster-whisper model folder (model.bin, config.json, tokenizer.json)")
    convert.add_argument("target", help="new folder for the WhisperForConditionalGeneration checkpoint")
    return parser, commands.choices


def _run(args: argparse.Namespace) -> None:
    if args.command == "train":
        from pipelines.processes import process_state
        from pipelines.runner.recipe import Recipe
        from pipelines.tasks import get_task

        recipe = Recipe.from_yaml(args.recipe, args.overrides)
        results = recipe.run()
        if process_state().is_main_process:
            summary = get_task(recipe.config.task)(recipe.config).summary_metrics
            headline = {k: v for k, v in results.items() if k.startswith("test_") or k.removeprefix("eval_") in summary}
            print(json.dumps(headline, indent=2))
    elif args.command == "evaluate":
        from pipelines.serving.predictor import Predictor

        print(json.dumps(Predictor(args.run).evaluate(args.split, data_file=args.data), indent=2))
    elif args.command == "compare":
        from pipelines.runner.compare import compare

        try:
            sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
        except ValueError as error:
            raise HubtuneError(f"--sizes must be comma-separated integers, got '{args.sizes}'") from error
        report = compare(args.recipe, args.overrides, sizes, args.metric, args.out, args.seeds)
        print(json.dumps(report.to_dict(), indent=2))
    elif args.command == "rank":
        from pipelines.runner.rank import CandidatesFailed, rank

        ranking = rank(args.recipe, args.checkpoints, args.samples, args.overrides, args.out)
        print(ranking.table())
        if ranking.failed:
            raise CandidatesFailed(f"{len(ranking.failed)} of {len(args.checkpoints)} candidates could not be scored")
    elif args.command == "search":
        _search(args)
    elif args.command == "export":
        from pipelines.serving.export import export_run

        print(json.dumps(export_run(args.run, args.out, args.merge, args.format), indent=2))
    elif args.command == "push":
        _push(args)
    elif args.command == "predict":
        _predict(args)
    elif args.command == "recipe-keys":
        from pipelines.commands.recipe_keys import format_keys, recipe_keys

        print(format_keys(recipe_keys(args.task)))
    elif args.command == "import-ct2":
        from pipelines.models.ct2_import import import_ct2_whisper

        print(import_ct2_whisper(args.source, args.target))


def _search(args: argparse.Namespace) -> None:
    from pipelines.runner.search import search, search_report
    from pipelines.runner.search_study import optuna_module

    # Optuna's trial lines go through the command's logging setup instead of its own handler.
    optuna_module().logging.disable_default_handler()
    optuna_module().logging.enable_propagation()
    if args.report is not None:
        if args.recipe is not None:
            raise HubtuneError("--report DIR rewrites a search folder's summary; it takes no recipe")
        summary = search_report(args.report).to_dict()
    elif args.recipe is None:
        raise HubtuneError("search needs a recipe (or --report DIR)")
    else:
        summary = search(
            args.recipe, args.overrides, args.trials, args.metric, args.out, args.storage, args.launch
        ).to_dict()
    print(json.dumps({key: summary[key] for key in ("metric", "direction", "counts", "best", "best_recipe")}, indent=2))


def _predict(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pipelines.processes import process_state
    from pipelines.serving.predictor import Predictor, check_output

    if args.data is not None and (args.inputs or args.file):
        raise HubtuneError("predict takes inputs (arguments, --file, -) or --data, not both")
    if args.data is None and not args.inputs and not args.file:
        raise HubtuneError("predict needs inputs: arguments, --file F, - for stdin, or --data FILE")
    if args.data is None and args.column is not None:
        raise HubtuneError("--column names the input column of --data; without --data it means nothing")
    if args.batch_size < 1:
        raise HubtuneError(f"--batch-size must be at least 1, got {args.batch_size}")
    output = Path(args.output) if args.output else None
    if args.data is not None and output is None:
        raise HubtuneError("predict --data writes one JSON line per row to --output FILE; give one")
    if args.draw is not None and args.data is not None:
        raise HubtuneError("--draw draws the images given as inputs; with --data, predictions go to --output only")
    if output is not None:
        # Before the model loads; an input file must never become the output, --overwrite or not.
        inputs = [*args.file, *args.inputs, *([args.data] if args.data is not None else [])]
        check_output(output, args.overwrite, inputs)
    predictor = Predictor.from_run(args.run)
    predictor.serving_for(args.timestamps)  # a run that cannot give times says so before any input is read
    if args.draw is not None:
        predictor.check_drawing()
        predictor.check_draw_folder(Path(args.draw))
    if args.data is not None and output is not None:
        rows = predictor.predict_data(
            args.data, output, args.batch_size, args.column, args.overwrite, timestamps=args.timestamps
        )
        if process_state().is_main_process:
            print(f"{rows} predictions -> {output}")
        return
    inputs = predictor.read_inputs(args.inputs, args.file, sys.stdin)
    predictions = predictor.predict(inputs, args.batch_size, timestamps=args.timestamps)
    if args.draw is not None:
        for path in predictor.draw(predictions, Path(args.draw), args.overwrite):
            print(f"drawn -> {path}", file=sys.stderr)
    if output is not None:
        print(f"{predictor.write(predictions, output, args.overwrite)} predictions -> {output}")
        return
    for prediction in predictions:
        print(json.dumps(prediction) if args.json else predictor.format_prediction(prediction))


def _push(args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from pipelines.runs.folder import read_run_recipe
    from pipelines.serving.hub import PushTarget, push_run

    run_dir = Path(args.run)
    config = read_run_recipe(run_dir)
    hub = dataclasses.replace(
        config.hub,
        repo_id=args.repo_id or config.hub.repo_id,
        private=config.hub.private if args.private is None else args.private,
    )
    target = PushTarget(hub, args.revision, args.commit_message, args.create_pr)
    dry_run = Path(args.dry_run) if args.dry_run else None
    pushed = push_run(run_dir, config, target, dry_run)
    if dry_run is not None:
        print(f"dry run: {len(pushed.files)} files for {hub.repo_id}, written to {pushed.where}:")
        print("\n".join(f"  {name}" for name in pushed.files))
    else:
        print(pushed.where)


def _traceback_note(error: HubtuneError) -> str:
    """Where the full traceback of an unexpected failure went, for a bug report; bad input has none to keep."""
    if not isinstance(error, RunFailed):
        return ""
    import os
    import tempfile
    import traceback

    try:
        handle, path = tempfile.mkstemp(prefix="hubtune-traceback-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write("".join(traceback.format_exception(error)))
    except OSError as unwritable:  # the full disk that may have stopped the run
        return f" (its traceback could not be written: {unwritable})"
    return f" (full traceback: {path})"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Options may stand anywhere among a command's positionals (`predict RUN --json "text"`): each command is
    parsed on its own with argparse's intermixed parsing, which a parser with subcommands cannot do itself."""
    parser, commands = _parser()
    if argv and argv[0] in commands:
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.command in HUB_COMMANDS:
        from pipelines.hub_access import go_offline_unless_reachable

        go_offline_unless_reachable()
    if not sys.stderr.isatty():
        # Progress bars are for terminals; in CI and batch logs they are noise around the one error line.
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        _run(args)
    except HubtuneError as error:
        print(f"hubtune: error: {error}{_traceback_note(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interrupt:
        # Ctrl-C or SIGTERM: one line (with what to do next when training was running), and the shell's exit code.
        verb = getattr(interrupt, "verb", "interrupted")
        print(f"hubtune: {verb}{': ' if str(interrupt) else ''}{interrupt}", file=sys.stderr)
        return int(getattr(interrupt, "exit_code", 130))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a cluster ending the job, `kill`): stop where Ctrl-C would, so that training keeps its last
    complete checkpoint and says how to resume, instead of dying mid-write."""
    raise Terminated()


def _default_sigterm_in_forked_child() -> None:
    """Forked children (datasets' map workers, DataLoader workers) must die of SIGTERM, with which their pools end
    them: with the command's handler they could not (a Python handler runs only when the interpreter gets to it,
    which a worker blocked on its pool's queue lock never does), and the pool waited for them forever."""
    if signal.getsignal(signal.SIGTERM) is stop_on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_forked_child)


if __name__ == "__main__":
    sys.exit(main())
