"""The caption vocabulary: a pruned bundle (format version 2) against the whole one, and the corpora it refuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from capdec_toolkit.export.export import ExportOptions, export_bundle
from capdec_toolkit.export.vocabulary import VocabularyError, corpus_token_ids, keep_tokens
from capdec_toolkit.models.checkpoint import load_checkpoint
from capdec_toolkit.models.clip_models import load_clip
from capdec_toolkit.models.train import CorpusError
from capdec_toolkit.reference.bundle import Bundle
from capdec_toolkit.reference.reference import OrtCaptioner
from capdec_toolkit.reference.tokenizer import END_OF_TEXT_ID, PERIOD_ID, gpt2_tokenizer

from conftest import make_checkpoint

CAPTIONS = ["a man standing next to a car", "two dogs on a beach.", "a red bus parked in the street"]


def _corpus(folder: Path, lines: list[str]) -> Path:
    path = folder / "captions.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_vocabulary_is_every_corpus_token_with_the_required_ones_ascending(tmp_path: Path) -> None:
    ids = corpus_token_ids(_corpus(tmp_path, CAPTIONS), [END_OF_TEXT_ID, PERIOD_ID])
    tokenizer = gpt2_tokenizer()
    expected = {END_OF_TEXT_ID, PERIOD_ID}
    for caption in CAPTIONS:
        expected.update(tokenizer.encode_ordinary(caption.rstrip(".") + "."))
    assert ids == sorted(expected)


def test_a_pruned_bundle_round_trips_and_scores_its_tokens_as_the_whole_one(
    hf_clip_dir: Path, photos: list[Path], tmp_path: Path
) -> None:
    # One mapper kind: the mapper is the same graph whatever the vocabulary.
    clip, model = load_clip(str(hf_clip_dir)), load_checkpoint(make_checkpoint(tmp_path, "mlp"))
    ids = corpus_token_ids(_corpus(tmp_path, CAPTIONS), [END_OF_TEXT_ID, PERIOD_ID])
    whole = export_bundle(clip, model, tmp_path / "whole", ExportOptions("t", "t", 8))
    pruned = export_bundle(clip, model, tmp_path / "pruned", ExportOptions("t", "t", 8, token_ids=tuple(ids)))

    assert whole.manifest["format_version"] == 1 and "token_ids" not in whole.manifest["decoder"]
    assert pruned.manifest["format_version"] == 2
    assert pruned.manifest["decoder"]["vocab_size"] == len(ids)
    assert list(pruned.token_ids()) == ids
    listed = {entry["path"] for entry in pruned.manifest["files"]}
    assert listed == {path.name for path in pruned.folder.iterdir()} - {"bundle.toml"}
    ranks = [int(line.split()[1]) for line in pruned.path("vocab.tiktoken").read_text().splitlines()]
    assert ranks == [token for token in ids if token != END_OF_TEXT_ID]
    assert pruned.path("token_embeddings.f32.bin").stat().st_size == len(ids) * 32 * 4

    # fp32: a kept token's logit is the whole decoder's, so the first step's log-probabilities over the kept rows
    # are the whole ones renormalised over them.
    full, kept = OrtCaptioner(whole, "fp32"), OrtCaptioner(pruned, "fp32")
    prefix = full.embed(photos[0]).prefix
    np.testing.assert_allclose(kept.first_logits(prefix), full.first_logits(prefix)[ids], rtol=1e-5, atol=1e-5)
    for precision in ("fp32", "int8"):
        captioner = OrtCaptioner(pruned, precision)
        tokens, text, _ = captioner.caption(prefix, captioner.rules(5))
        assert set(tokens) <= set(ids)
        assert text == gpt2_tokenizer().decode([t for t in tokens if t != END_OF_TEXT_ID]).strip().lower()

    # Exporting the whole vocabulary into the same folder leaves no caption vocabulary behind.
    again = export_bundle(clip, model, tmp_path / "pruned", ExportOptions("t", "t", 8))
    assert again.manifest["format_version"] == 1 and not again.path("token_ids.u32").exists()


def test_a_bundle_that_mixes_the_versions_is_refused(hf_clip_dir: Path, tmp_path: Path) -> None:
    ids = corpus_token_ids(_corpus(tmp_path, CAPTIONS), [END_OF_TEXT_ID, PERIOD_ID])
    checkpoint = make_checkpoint(tmp_path, "mlp")
    bundle = export_bundle(load_clip(str(hf_clip_dir)), load_checkpoint(checkpoint), tmp_path / "b",
                           ExportOptions("t", "t", 8, precisions=("fp32",), token_ids=tuple(ids)))
    manifest = bundle.path("bundle.toml")
    manifest.write_text(manifest.read_text().replace("format_version = 2", "format_version = 1"))
    with pytest.raises(ValueError, match="decoder.token_ids needs format_version = 2"):
        Bundle.open(bundle.folder)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a cat\x00 on a mat", r"captions.txt:2:6: unknown character U\+0000"),
        ("a caf\ufffd on a corner", r"captions.txt:2:6: unknown character U\+FFFD \(REPLACEMENT CHARACTER\)"),
        ("a dog\x1b[0m", r"captions.txt:2:6: unknown character U\+001B"),
    ],
)
def test_a_corpus_with_unknown_characters_is_refused_at_its_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        corpus_token_ids(_corpus(tmp_path, ["a cat on a mat", line]), [END_OF_TEXT_ID])


def test_tokens_outside_the_decoder_or_out_of_order_are_refused(tmp_path: Path) -> None:
    gpt = load_checkpoint(make_checkpoint(tmp_path, "mlp")).gpt
    with pytest.raises(VocabularyError, match="token id 60000 is outside the decoder's vocabulary of 50257"):
        keep_tokens(gpt, [13, 60000])
    with pytest.raises(VocabularyError, match="distinct and ascending"):
        keep_tokens(gpt, [262, 13])


def test_export_vocabulary_on_the_command_line(hf_clip_dir: Path, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, CAPTIONS)
    checkpoint = make_checkpoint(tmp_path, "mlp")
    command = [sys.executable, "-m", "capdec_toolkit.cli", "export", "--clip", str(hf_clip_dir), "--checkpoint",
               str(checkpoint), "--out", str(tmp_path / "b"), "--precisions", "int8", "--vocabulary", str(corpus)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"caption vocabulary: {len(corpus_token_ids(corpus, [END_OF_TEXT_ID, PERIOD_ID]))} GPT-2 tokens" in done.stdout
    assert Bundle.open(tmp_path / "b").manifest["format_version"] == 2
    corpus.write_bytes(b"a cat\n\xff\xfe on a mat\n")
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "captions.txt:2: not UTF-8" in failed.stderr and "Traceback" not in failed.stderr
