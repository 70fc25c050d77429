"""Offline speech fixtures: tiny wav2vec2 and Whisper checkpoints, and audio written by the tests themselves."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import soundfile

# One pitch per class: a tone the tiny models can tell apart from a few hundred steps of training.
TONES = {"low": 250.0, "mid": 800.0, "high": 2400.0}


def tone(frequency: float, seconds: float, rate: int, rng: random.Random) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * frequency * rng.uniform(0.97, 1.03) * t + rng.uniform(0, 6.3))
    return (wave + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 0.02, len(t))).astype(np.float32)


def write_tone_folder(root: Path, n_per_class: int, seed: int, rates=(16000, 8000, 44100)) -> Path:
    """Class sub-folders of tone clips at mixed sampling rates; every third clip is stereo."""
    rng = random.Random(seed)
    for label, frequency in TONES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            rate = rates[i % len(rates)]
            wave = tone(frequency, rng.uniform(0.4, 0.7), rate, rng)
            if i % 3 == 2:
                wave = np.stack([wave, wave * 0.5], axis=1)
            soundfile.write(root / label / f"{label}_{i}.wav", wave, rate)
    return root


def tiny_wav2vec2_folder(folder: Path, model_class_name: str = "Wav2Vec2ForSequenceClassification") -> Path:
    """A 2-layer wav2vec2 (hidden 32) with its feature extractor, saved offline; strides of 160 samples (10 ms) per frame."""
    import torch
    import transformers
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_kernel=(10, 16), conv_stride=(10, 16), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=16,
                            feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0,
                            vocab_size=8)
    torch.manual_seed(0)
    getattr(transformers, model_class_name)(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# CTC data: every letter is a tone of its own pitch, so a transcript is audible letter by letter.
LETTER_TONES = {"a": 300.0, "b": 900.0, "c": 2000.0}


def spell(text: str, rate: int, rng: random.Random) -> np.ndarray:
    """`text` as tones: 0.1 s per letter, 0.03 s of silence between letters, 0.1 s between words."""
    pieces = [np.zeros(int(0.05 * rate), np.float32)]
    for word in text.split():
        for letter in word:
            pieces += [tone(LETTER_TONES[letter], 0.1, rate, rng), np.zeros(int(0.03 * rate), np.float32)]
        pieces.append(np.zeros(int(0.07 * rate), np.float32))
    return np.concatenate(pieces)


def write_spelled_split(folder: Path, n: int, seed: int, rate: int = 16000) -> Path:
    """An audiofolder with metadata.csv (file_name, text) of random words over `LETTER_TONES`."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        words = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 2))]
        text = " ".join(words)
        soundfile.write(folder / f"clip{i}.wav", spell(text, rate, rng), rate)
        # Upper case and punctuation in the files: normalisation must strip them.
        rows.append({"file_name": f"clip{i}.wav", "text": text.upper() + "."})
    write_manifest(folder / "metadata.csv", rows)
    return folder
