//! GPT-2's byte-level BPE vocabulary in tiktoken's format, for decoding only: the captioner never encodes text.

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug)]
pub struct Tokenizer {
    /// Token bytes indexed by id. End-of-text, the one special token, follows the ranks and has no text.
    tokens: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Parses lines `<base64 bytes> <rank>`; ranks must be exactly 0..n, so ids need no lookup table.
    pub fn from_tiktoken(text: &str, end_of_text_id: u32) -> Result<Tokenizer> {
        let mut tokens: Vec<Option<Vec<u8>>> = Vec::new();
        for (ix, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line_no = ix + 1;
            let (b64, rank) = line
                .split_once(' ')
                .with_context(|| format!("line {line_no}: expected `<base64 bytes> <rank>`"))?;
            let bytes = STANDARD
                .decode(b64)
                .with_context(|| format!("line {line_no}: invalid base64"))?;
            let rank: usize = rank
                .trim()
                .parse()
                .with_context(|| format!("line {line_no}: invalid rank `{rank}`"))?;
            ensure!(
                rank < 1 << 24,
                "line {line_no}: rank {rank} is implausibly large"
            );
            if rank >= tokens.len() {
                tokens.resize(rank + 1, None);
            }
            ensure!(
                tokens[rank].is_none(),
                "line {line_no}: rank {rank} appears twice"
            );
            tokens[rank] = Some(bytes);
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(rank, t)| t.with_context(|| format!("rank {rank} is missing")))
            .collect::<Result<Vec<_>>>()?;
        if end_of_text_id as usize != tokens.len() {
            bail!(
                "the vocabulary has {} ranks, so end-of-text must be id {}, the manifest says {end_of_text_id}",
                tokens.len(),
                tokens.len()
            );
        }
        Ok(Tokenizer { tokens })
    }

    /// Number of ids, end-of-text included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + 1
    }

    fn end_of_text_id(&self) -> usize {
        self.tokens.len()
    }

    /// The text of a caption: end-of-text contributes nothing, and the tokens' bytes are joined before decoding,
    /// so a character split across tokens comes out whole; invalid sequences become U+FFFD. Ids beyond the
    /// vocabulary cannot come from a validated bundle; they also decode to U+FFFD rather than fail.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            match self.tokens.get(id as usize) {
                Some(t) => bytes.extend_from_slice(t),
                None if id as usize == self.end_of_text_id() => {}
                None => bytes.extend_from_slice("\u{FFFD}".as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&[u8]]) -> String {
        tokens
            .iter()
            .enumerate()
            .map(|(rank, t)| format!("{} {rank}\n", STANDARD.encode(t)))
            .collect()
    }

    #[test]
    fn decodes_bytes_across_token_boundaries() {
        // "é" is C3 A9 in UTF-8; byte-level BPE may put the two bytes in different tokens.
        let t = Tokenizer::from_tiktoken(&vocab(&[b"caf", b"\xc3", b"\xa9", b" ok", b"\xff"]), 5)
            .unwrap();
        assert_eq!(t.vocab_size(), 6);
        assert_eq!(t.decode(&[0, 1, 2, 3]), "café ok");
        assert_eq!(t.decode(&[0, 1, 3]), "caf\u{FFFD} ok");
        assert_eq!(t.decode(&[4]), "\u{FFFD}");
        assert_eq!(t.decode(&[0, 5]), "caf");
        assert_eq!(t.decode(&[0, 99]), "caf\u{FFFD}");
    }

    #[test]
    fn refuses_malformed_vocabularies() {
        let err = Tokenizer::from_tiktoken("YQ== 0\nYg== 2\n", 3).unwrap_err();
        assert!(format!("{err:#}").contains("rank 1 is missing"), "{err:#}");
        let err = Tokenizer::from_tiktoken("YQ== 0\n!!! 1\n", 2).unwrap_err();
        assert!(
            format!("{err:#}").contains("line 2: invalid base64"),
            "{err:#}"
        );
        let err = Tokenizer::from_tiktoken("YQ== 0\nYg== 1\n", 5).unwrap_err();
        assert!(
            format!("{err:#}").contains("end-of-text must be id 2"),
            "{err:#}"
        );
        let err = Tokenizer::from_tiktoken("YQ==0\n", 1).unwrap_err();
        assert!(format!("{err:#}").contains("line 1: expected"), "{err:#}");
    }
}
