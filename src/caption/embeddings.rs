//! The decoder's token-embedding table (docs/bundle-format.md, "Token-embedding tables"). The decoder graph
//! takes embeddings rather than ids, so that the mapper's prefix can be fed the same way as tokens.

use anyhow::{Result, bail, ensure};

#[derive(Debug)]
pub enum TokenEmbeddings {
    F32 {
        width: usize,
        values: Vec<f32>,
    },
    /// Kept quantized in memory (a quarter of the f32 size); rows are expanded one at a time.
    Q8Rows {
        width: usize,
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl TokenEmbeddings {
    pub fn from_f32_bytes(
        bytes: &[u8],
        vocab_size: usize,
        width: usize,
    ) -> Result<TokenEmbeddings> {
        let expected = vocab_size * width * 4;
        ensure!(
            bytes.len() == expected,
            "f32 table is {} bytes, {vocab_size} x {width} float32 values need {expected}",
            bytes.len()
        );
        Ok(TokenEmbeddings::F32 {
            width,
            values: f32s(bytes),
        })
    }

    pub fn from_q8_rows_bytes(
        bytes: &[u8],
        vocab_size: usize,
        width: usize,
    ) -> Result<TokenEmbeddings> {
        let n = vocab_size * width;
        let expected = n + vocab_size * 4;
        ensure!(
            bytes.len() == expected,
            "q8-rows table is {} bytes, {vocab_size} x {width} int8 values and {vocab_size} float32 scales need \
             {expected}",
            bytes.len()
        );
        let values = bytes[..n].iter().map(|&b| b as i8).collect();
        Ok(TokenEmbeddings::Q8Rows {
            width,
            values,
            scales: f32s(&bytes[n..]),
        })
    }

    pub fn width(&self) -> usize {
        match self {
            TokenEmbeddings::F32 { width, .. } | TokenEmbeddings::Q8Rows { width, .. } => *width,
        }
    }

    /// Appends the embedding of `token` to `out`. Ids come from the decoder's own logits, whose size is checked
    /// against the table when the decoder is loaded.
    pub fn push_row(&self, token: u32, out: &mut Vec<f32>) -> Result<()> {
        let w = self.width();
        let start = token as usize * w;
        match self {
            TokenEmbeddings::F32 { values, .. } => {
                let Some(row) = values.get(start..start + w) else {
                    bail!("token {token} is outside the embedding table");
                };
                out.extend_from_slice(row);
            }
            TokenEmbeddings::Q8Rows { values, scales, .. } => {
                let (Some(row), Some(&scale)) =
                    (values.get(start..start + w), scales.get(token as usize))
                else {
                    bail!("token {token} is outside the embedding table");
                };
                out.extend(row.iter().map(|&q| f32::from(q) * scale));
            }
        }
        Ok(())
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts() {
        let f: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = TokenEmbeddings::from_f32_bytes(&f, 3, 2).unwrap();
        let mut out = vec![];
        t.push_row(2, &mut out).unwrap();
        t.push_row(0, &mut out).unwrap();
        assert_eq!(out, vec![5.0, 6.0, 1.0, 2.0]);
        assert!(t.push_row(3, &mut out).is_err());

        let mut q: Vec<u8> = [1i8, -2, 127, -127].iter().map(|&v| v as u8).collect();
        q.extend([0.5f32, 0.25].iter().flat_map(|v| v.to_le_bytes()));
        let t = TokenEmbeddings::from_q8_rows_bytes(&q, 2, 2).unwrap();
        let mut out = vec![];
        t.push_row(1, &mut out).unwrap();
        t.push_row(0, &mut out).unwrap();
        assert_eq!(out, vec![31.75, -31.75, 0.5, -1.0]);
    }

    #[test]
    fn refuses_wrong_sizes() {
        let err = TokenEmbeddings::from_f32_bytes(&[0; 20], 3, 2).unwrap_err();
        assert!(err.to_string().contains("need 24"), "{err}");
        let err = TokenEmbeddings::from_q8_rows_bytes(&[0; 10], 2, 2).unwrap_err();
        assert!(err.to_string().contains("need 12"), "{err}");
    }
}
