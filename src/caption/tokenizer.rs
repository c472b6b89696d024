//! GPT-2's byte-level BPE vocabulary in tiktoken's format, for decoding only: the captioner never encodes text.

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The decoder's vocabulary: the GPT-2 token of every row of its output layer and token table.
#[derive(Debug)]
pub struct Tokenizer {
    /// Each row's GPT-2 id, ascending: all of GPT-2's, or a caption vocabulary's (docs/bundle-format.md).
    ids: Vec<u32>,
    /// Each row's bytes; end-of-text, GPT-2's one special token, has none.
    tokens: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Parses lines `<base64 bytes> <rank>`, a rank being a GPT-2 id. Without `token_ids` the rows are every
    /// rank, which must be exactly 0..n, and end-of-text n; with them (a caption vocabulary) the rows are those
    /// ids, end-of-text among them, and every other one needs its line.
    pub fn from_tiktoken(
        text: &str,
        end_of_text_id: u32,
        token_ids: Option<Vec<u32>>,
    ) -> Result<Tokenizer> {
        let mut ranks: Vec<Option<Vec<u8>>> = Vec::new();
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
            if rank >= ranks.len() {
                ranks.resize(rank + 1, None);
            }
            ensure!(
                ranks[rank].is_none(),
                "line {line_no}: rank {rank} appears twice"
            );
            ranks[rank] = Some(bytes);
        }
        let eot = end_of_text_id as usize;
        let ids = match token_ids {
            None => {
                if let Some(rank) = ranks.iter().position(Option::is_none) {
                    bail!("rank {rank} is missing");
                }
                ensure!(
                    eot == ranks.len(),
                    "the vocabulary has {} ranks, so end-of-text must be id {}, the manifest says \
                     {end_of_text_id}",
                    ranks.len(),
                    ranks.len()
                );
                (0..=end_of_text_id).collect()
            }
            Some(ids) => {
                ensure!(
                    ids.binary_search(&end_of_text_id).is_ok(),
                    "end-of-text (id {end_of_text_id}) is not in the caption vocabulary"
                );
                ensure!(
                    ranks.get(eot).is_none_or(Option::is_none),
                    "id {end_of_text_id} is end-of-text, which has no bytes, yet the vocabulary has a line for it"
                );
                ids
            }
        };
        let tokens = ids
            .iter()
            .map(
                |&id| match ranks.get_mut(id as usize).and_then(Option::take) {
                    Some(bytes) => Ok(bytes),
                    None if id == end_of_text_id => Ok(Vec::new()),
                    None => bail!("the caption vocabulary's id {id} has no line in the vocabulary"),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(Tokenizer { ids, tokens })
    }

    /// Number of rows, end-of-text included.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The row of a GPT-2 id, if the vocabulary has it.
    pub fn row_of(&self, id: u32) -> Option<u32> {
        self.ids.binary_search(&id).ok().map(|row| row as u32)
    }

    /// The GPT-2 ids of rows; rows come from the decoder's own logits, whose size is checked at load.
    pub fn ids(&self, rows: &[u32]) -> Vec<u32> {
        rows.iter()
            .map(|&row| self.ids.get(row as usize).copied().unwrap_or(u32::MAX))
            .collect()
    }

    /// The text of a caption's rows: end-of-text contributes nothing, and the tokens' bytes are joined before
    /// decoding, so a character split across tokens comes out whole; invalid sequences become U+FFFD. Rows
    /// beyond the vocabulary cannot come from a validated bundle; they also decode to U+FFFD rather than fail.
    pub fn decode(&self, rows: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &row in rows {
            match self.tokens.get(row as usize) {
                Some(t) => bytes.extend_from_slice(t),
                None => bytes.extend_from_slice("\u{FFFD}".as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A caption vocabulary's file: `rows` little-endian u32 GPT-2 ids, strictly ascending.
pub fn parse_token_ids(bytes: &[u8], rows: usize) -> Result<Vec<u32>> {
    ensure!(
        bytes.len() == rows * 4,
        "{} bytes, the manifest's decoder.vocab_size of {rows} needs {} (one little-endian u32 a row)",
        bytes.len(),
        rows * 4
    );
    let ids: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(row) = ids.windows(2).position(|w| w[0] >= w[1]) {
        bail!(
            "ids must be strictly ascending, row {} has {} after {}",
            row + 1,
            ids[row + 1],
            ids[row]
        );
    }
    Ok(ids)
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
        let t = Tokenizer::from_tiktoken(
            &vocab(&[b"caf", b"\xc3", b"\xa9", b" ok", b"\xff"]),
            5,
            None,
        )
        .unwrap();
        assert_eq!(t.rows(), 6);
        assert_eq!(t.decode(&[0, 1, 2, 3]), "café ok");
        assert_eq!(t.decode(&[0, 1, 3]), "caf\u{FFFD} ok");
        assert_eq!(t.decode(&[4]), "\u{FFFD}");
        assert_eq!(t.decode(&[0, 5]), "caf");
        assert_eq!(t.decode(&[0, 99]), "caf\u{FFFD}");
    }

    #[test]
    fn refuses_malformed_vocabularies() {
        let err = Tokenizer::from_tiktoken("YQ== 0\nYg== 2\n", 3, None).unwrap_err();
        assert!(format!("{err:#}").contains("rank 1 is missing"), "{err:#}");
        let err = Tokenizer::from_tiktoken("YQ== 0\n!!! 1\n", 2, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("line 2: invalid base64"),
            "{err:#}"
        );
        let err = Tokenizer::from_tiktoken("YQ== 0\nYg== 1\n", 5, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("end-of-text must be id 2"),
            "{err:#}"
        );
        let err = Tokenizer::from_tiktoken("YQ==0\n", 1, None).unwrap_err();
        assert!(format!("{err:#}").contains("line 1: expected"), "{err:#}");
    }

    #[test]
    fn a_caption_vocabulary_maps_rows_to_its_gpt2_ids() {
        // Ranks 2, 7 and 9 of a vocabulary that keeps 7 and 9 (and end-of-text, 50256): rows 0, 1, 2.
        let text = format!(
            "{} 2\n{} 7\n{} 9\n",
            STANDARD.encode("x"),
            STANDARD.encode(" a"),
            STANDARD.encode(".")
        );
        let t = Tokenizer::from_tiktoken(&text, 50256, Some(vec![7, 9, 50256])).unwrap();
        assert_eq!(t.rows(), 3);
        assert_eq!(t.row_of(9), Some(1));
        assert_eq!(t.row_of(2), None);
        assert_eq!(t.ids(&[1, 0, 2]), vec![9, 7, 50256]);
        assert_eq!(t.decode(&[0, 1, 2]), " a.");

        let err = Tokenizer::from_tiktoken(&text, 50256, Some(vec![7, 8, 50256])).unwrap_err();
        assert!(format!("{err:#}").contains("id 8 has no line"), "{err:#}");
        let err = Tokenizer::from_tiktoken(&text, 50256, Some(vec![7, 9])).unwrap_err();
        assert!(
            format!("{err:#}").contains("end-of-text (id 50256) is not in"),
            "{err:#}"
        );
        let err = Tokenizer::from_tiktoken(&text, 9, Some(vec![7, 9])).unwrap_err();
        assert!(
            format!("{err:#}").contains("yet the vocabulary has a line for it"),
            "{err:#}"
        );
    }

    #[test]
    fn token_id_files_are_ascending_u32s_one_a_row() {
        let bytes: Vec<u8> = [13u32, 257, 50256]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(parse_token_ids(&bytes, 3).unwrap(), vec![13, 257, 50256]);
        let err = parse_token_ids(&bytes, 4).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("12 bytes, the manifest's decoder.vocab_size of 4 needs 16"),
            "{err:#}"
        );
        let unordered: Vec<u8> = [13u32, 13].iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = parse_token_ids(&unordered, 2).unwrap_err();
        assert!(
            format!("{err:#}").contains("row 1 has 13 after 13"),
            "{err:#}"
        );
    }
}
