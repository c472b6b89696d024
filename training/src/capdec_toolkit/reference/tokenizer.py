"""GPT-2's byte-level BPE (50,257 tokens) from the vocabulary file that every bundle carries: whole, or (a bundle with
a caption vocabulary) only the kept tokens' lines, under their GPT-2 ranks."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

VOCAB_FILE = Path(__file__).parent / "assets" / "gpt2.tiktoken"
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
PERIOD_ID = 13
# GPT-2's pre-tokenisation pattern, as in tiktoken's r50k_base.
_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=4)
def gpt2_tokenizer(vocab_file: Path = VOCAB_FILE) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(vocab_file)),
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
    )


@lru_cache(maxsize=4)
def _token_bytes(vocab_file: Path) -> dict[int, bytes]:
    return {rank: token for token, rank in load_tiktoken_bpe(str(vocab_file)).items()}


def decode_text(token_ids: list[int], end_of_text_id: int, lowercase: bool, vocab_file: Path = VOCAB_FILE) -> str:
    """Bytes of every token but end-of-text, then UTF-8 (invalid bytes become U+FFFD), trimmed."""
    tokens = _token_bytes(vocab_file)
    raw = b"".join(tokens[token] for token in token_ids if token != end_of_text_id)
    text = raw.decode("utf-8", errors="replace").strip()
    return text.lower() if lowercase else text
