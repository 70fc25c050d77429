"""Import a faster-whisper (CTranslate2) Whisper model into a Hugging Face `WhisperForConditionalGeneration` folder.

CTranslate2's `model.bin` is a flat list of named tensors (its own binary spec, read here with `struct` so
ctranslate2 itself is not needed). The layout differs from transformers' in three ways: names (`encoder/
layer_0/self_attention/linear_0`), fused attention projections (q|k|v in self-attention, k|v in
cross-attention, with the zero key bias that transformers' `k_proj` lacks), and `gamma`/`beta` for norms.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import cast

import numpy as np
import torch

from pipelines.errors import HubtuneError, require_path

logger = logging.getLogger(__name__)

# CTranslate2's DataType enum (include/ctranslate2/types.h).
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
BFLOAT16 = 5
SPECIAL_TOKENS = {
    "unk_token": "<|endoftext|>",
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.offset, self.path = data, 0, path

    def take(self, fmt: str):
        try:
            values = struct.unpack_from(fmt, self.data, self.offset)
        except struct.error as error:
            raise HubtuneError(f"CTranslate2 model '{self.path}' is truncated at byte {self.offset}") from error
        self.offset += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.take("<H")
        text = self.data[self.offset : self.offset + length].rstrip(b"\0").decode()
        self.offset += length
        return text

    def array(self, dtype_id: int, shape: list[int], size: int) -> np.ndarray:
        raw = self.data[self.offset : self.offset + size]
        self.offset += size
        if dtype_id == BFLOAT16:  # numpy has no bfloat16: widen the 16 bits to the top of a float32
            return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if dtype_id not in DTYPES:
            raise HubtuneError(f"CTranslate2 model '{self.path}': unsupported data type {dtype_id} (quantised?)")
        return np.frombuffer(raw, DTYPES[dtype_id]).reshape(shape)


def read_ct2_model(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Spec name and every variable (aliases resolved) of a CTranslate2 `model.bin` (binary version 4 to 6)."""
    reader = _Reader(path.read_bytes(), path)
    version = reader.take("<I")
    if not 4 <= version <= 6:
        raise HubtuneError(f"'{path}' is not a CTranslate2 model.bin of a known version (got version {version})")
    spec = reader.string()
    reader.take("<I")  # spec revision
    variables = {}
    for _ in range(reader.take("<I")):
        name = reader.string()
        shape = [reader.take("<I") for _ in range(reader.take("<B"))]
        dtype_id, size = reader.take("<B"), reader.take("<I")
        variables[name] = reader.array(dtype_id, shape, size)
    for _ in range(reader.take("<I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    return int(variables[name].reshape(-1)[0])


def _norm(state: dict, variables: dict, source: str, target: str) -> None:
    state[f"{target}.weight"] = variables[f"{source}/gamma"]
    state[f"{target}.bias"] = variables[f"{source}/beta"]


def _linear(state: dict, variables: dict, source: str, target: str) -> None:
    state[f"{target}.weight"] = variables[f"{source}/weight"]
    if f"{source}/bias" in variables:
        state[f"{target}.bias"] = variables[f"{source}/bias"]


def _split(state: dict, variables: dict, source: str, targets: list[str]) -> None:
    """A fused projection into its parts; transformers' `k_proj` has no bias (CTranslate2 stores zeros)."""
    weights = np.split(variables[f"{source}/weight"], len(targets))
    biases = np.split(variables[f"{source}/bias"], len(targets))
    for target, weight, bias in zip(targets, weights, biases):
        state[f"{target}.weight"] = weight
        if not target.endswith("k_proj"):
            state[f"{target}.bias"] = bias


def _layers(variables: dict, prefix: str) -> int:
    return len({name.split("/")[1] for name in variables if re.match(rf"{prefix}/layer_\d+/", name)})


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(state, variables, f"encoder/{conv}", f"model.encoder.{conv}")
    state["model.encoder.embed_positions.weight"] = variables["encoder/position_encodings/encodings"]
    state["model.decoder.embed_positions.weight"] = variables["decoder/position_encodings/encodings"]
    state["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    for side in ("encoder", "decoder"):
        _norm(state, variables, f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(_layers(variables, side)):
            source, target = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _norm(state, variables, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm")
            _split(
                state,
                variables,
                f"{source}/self_attention/linear_0",
                [f"{target}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")],
            )
            _linear(state, variables, f"{source}/self_attention/linear_1", f"{target}.self_attn.out_proj")
            if side == "decoder":
                _norm(state, variables, f"{source}/attention/layer_norm", f"{target}.encoder_attn_layer_norm")
                _linear(state, variables, f"{source}/attention/linear_0", f"{target}.encoder_attn.q_proj")
                _split(
                    state,
                    variables,
                    f"{source}/attention/linear_1",
                    [f"{target}.encoder_attn.{p}" for p in ("k_proj", "v_proj")],
                )
                _linear(state, variables, f"{source}/attention/linear_2", f"{target}.encoder_attn.out_proj")
            _norm(state, variables, f"{source}/ffn/layer_norm", f"{target}.final_layer_norm")
            _linear(state, variables, f"{source}/ffn/linear_0", f"{target}.fc1")
            _linear(state, variables, f"{source}/ffn/linear_1", f"{target}.fc2")
    return state


def whisper_config(variables: dict[str, np.ndarray], token_ids: dict[str, int]):
    from transformers import WhisperConfig

    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        encoder_layers=_layers(variables, "encoder"),
        decoder_layers=_layers(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads"),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads"),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=token_ids["<|startoftranscript|>"],
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|endoftext|>"],
        pad_token_id=token_ids["<|endoftext|>"],
        tie_word_embeddings=True,
    )


def generation_config(config, ct2_config: dict, token_ids: dict[str, int]):
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865  # the English-only checkpoints have 51864 tokens
    language_ids = set(ct2_config.get("lang_ids", []))
    languages = {token: i for token, i in token_ids.items() if i in language_ids}
    extra = (
        {"lang_to_id": languages, "task_to_id": {t: token_ids[f"<|{t}|>"] for t in ("transcribe", "translate")}}
        if multilingual
        else {}
    )
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        no_timestamps_token_id=token_ids["<|notimestamps|>"],
        is_multilingual=multilingual,
        alignment_heads=ct2_config.get("alignment_heads", []),
        **extra,
    )


def import_ct2_whisper(source: str | Path, target: str | Path) -> Path:
    """Convert the faster-whisper folder `source` (model.bin, config.json, tokenizer.json) into `target`."""
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    source, target = Path(source), Path(target)
    for name in ("model.bin", "tokenizer.json"):
        if not (source / name).is_file():
            raise HubtuneError(f"'{source}' is not a faster-whisper model folder: it has no {name}")
    if target.exists():
        require_path(target, "folder", "target folder")
    if target.exists() and any(target.iterdir()):
        raise HubtuneError(f"target folder '{target}' already exists and is not empty")
    spec, variables = read_ct2_model(source / "model.bin")
    if spec != "WhisperSpec":
        raise HubtuneError(f"'{source / 'model.bin'}' holds a CTranslate2 '{spec}', not a Whisper model")
    if any(name.endswith("weight_scale") for name in variables):
        raise HubtuneError(
            f"'{source / 'model.bin'}' is quantised (int8 weights with scales); convert a float16 or "
            "float32 faster-whisper model (ct2-transformers-converter --quantization float16)"
        )
    ct2_config = json.loads((source / "config.json").read_text()) if (source / "config.json").is_file() else {}
    tokenizer = WhisperTokenizer(tokenizer_file=str(source / "tokenizer.json"), **SPECIAL_TOKENS)
    token_ids = {
        token: cast(int, tokenizer.convert_tokens_to_ids(token))  # one token in, one id out
        for token in tokenizer.get_vocab()
        if token.startswith("<|")
    }
    config = whisper_config(variables, token_ids)
    config.architectures = ["WhisperForConditionalGeneration"]
    model = WhisperForConditionalGeneration(config)
    state = {
        name: torch.from_numpy(np.array(value, dtype=np.float32))
        for name, value in whisper_state_dict(variables).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    # `proj_out` is tied to the token embeddings; every other weight must come from the file.
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise HubtuneError(
            f"'{source}': converted weights do not fit Whisper (missing {missing}, unexpected {unexpected})"
        )
    model.tie_weights()
    model.generation_config = generation_config(config, ct2_config, token_ids)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    # The encoder sees a fixed window: 2 mel frames (of 10 ms) per position, 30 s for the released models.
    seconds = config.max_source_positions * 2 * 160 // 16000
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=seconds)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(target)
    logger.info("imported %s (%d parameters) into %s", source, model.num_parameters(), target)
    return target
