//! The GPT-2 decoder graph with an explicit key/value cache (docs/bundle-format.md, "The graphs").
//!
//! One plan serves every call: batch, new-sequence and past lengths stay symbolic, so the prefix call
//! (1 x P, no past) and the token calls (B x 1, growing past) share one set of optimised weights.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use tract_onnx::prelude::*;

use crate::caption::embeddings::TokenEmbeddings;
use crate::caption::search::Step;
use crate::runtime::graph::{self, Plan};

/// The decoder's dimensions, from the manifest.
#[derive(Debug, Clone, Copy)]
pub struct DecoderShape {
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    pub vocab_size: usize,
}

pub struct Decoder {
    plan: Plan,
    shape: DecoderShape,
    table: TokenEmbeddings,
}

impl Decoder {
    pub fn load(
        path: &Path,
        bytes: Vec<u8>,
        shape: DecoderShape,
        table: impl FnOnce() -> Result<TokenEmbeddings>,
    ) -> Result<Decoder> {
        let DecoderShape {
            layers,
            heads,
            width,
            vocab_size,
        } = shape;
        let (past, present) = cache_names(layers);
        let inputs: Vec<&str> = ["inputs_embeds", "position_ids"]
            .into_iter()
            .chain(past.iter().map(String::as_str))
            .collect();
        let outputs: Vec<&str> = ["logits"]
            .into_iter()
            .chain(present.iter().map(String::as_str))
            .collect();

        let mut model = graph::parse(path, bytes)?;
        graph::select_io(&mut model, path, &inputs, &outputs)?;
        let batch = graph::axis_symbol(&model, 0, 0, "batch")?;
        let seq = graph::axis_symbol(&model, 0, 1, "seq")?;
        let past_len = graph::axis_symbol(&model, 2, 2, "past")?;
        // Bounds let tract prove shapes non-empty, which some of its faster ops require: multiplying the int8
        // products by their scale takes a vectorised by-scalar kernel instead of a broadcasting loop.
        for bound in [
            format!("{batch}>=1"),
            format!("{seq}>=1"),
            format!("{past_len}>=0"),
        ] {
            model
                .symbols
                .add_assertion(bound.as_str())
                .with_context(|| format!("{}: cannot declare {bound}", path.display()))?;
        }
        let head_dim = (width / heads).to_dim();
        model.set_input_fact(
            0,
            f32::fact([batch.clone(), seq.clone(), width.to_dim()]).into(),
        )?;
        model.set_input_fact(1, i64::fact([batch.clone(), seq]).into())?;
        for ix in 2..inputs.len() {
            let fact = f32::fact([
                batch.clone(),
                heads.to_dim(),
                past_len.clone(),
                head_dim.clone(),
            ]);
            model.set_input_fact(ix, fact.into())?;
        }
        let plan = graph::compile(model, path)?;

        let logits = plan.model().output_fact(0)?;
        ensure!(
            logits.datum_type == f32::datum_type()
                && logits.rank() == 2
                && logits.shape[1].to_i64().ok().map(|d| d as usize) == Some(vocab_size),
            "{}: output `logits` is {logits:?}, expected f32 [batch, {vocab_size}] (the last position only)",
            path.display()
        );
        // Read only now, so that it is not resident while the graph's loading transient is (BENCHMARKS.md).
        let table = table()?;
        Ok(Decoder { plan, shape, table })
    }

    /// Runs the prefix call; the returned session continues from it.
    pub fn start(&self, prefix: &[f32]) -> Result<(Session<'_>, Vec<f32>)> {
        let DecoderShape {
            layers,
            heads,
            width,
            ..
        } = self.shape;
        let length = prefix.len() / width;
        ensure!(
            length > 0 && prefix.len() == length * width,
            "prefix of {} values is not [P, {width}]",
            prefix.len()
        );
        let embeds = Tensor::from_shape(&[1, length, width], prefix)?;
        let positions = Tensor::from_shape(&[1, length], &(0..length as i64).collect::<Vec<_>>())?;
        let empty = Tensor::zero::<f32>(&[1, heads, 0, width / heads])?.into_tvalue();
        let (mut logits, cache) = self.run(embeds, positions, vec![empty; 2 * layers])?;
        ensure!(
            logits.len() == 1,
            "decoder returned {} rows of logits for one prefix",
            logits.len()
        );
        Ok((
            Session {
                decoder: self,
                cache,
                position: length,
            },
            logits.swap_remove(0),
        ))
    }

    #[cfg(feature = "onnxruntime")]
    pub(crate) fn shape(&self) -> DecoderShape {
        self.shape
    }

    /// The input embeddings of one new position per row, `[tokens, width]`.
    pub(crate) fn token_embeddings(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut embeds = Vec::with_capacity(tokens.len() * self.shape.width);
        for &token in tokens {
            self.table.push_row(token, &mut embeds)?;
        }
        Ok(embeds)
    }

    fn run(
        &self,
        embeds: Tensor,
        positions: Tensor,
        cache: Vec<TValue>,
    ) -> Result<(Vec<Vec<f32>>, Vec<TValue>)> {
        let batch = embeds.shape()[0];
        let inputs: TVec<TValue> = [embeds.into_tvalue(), positions.into_tvalue()]
            .into_iter()
            .chain(cache)
            .collect();
        let mut outputs = graph::run(&self.plan, inputs)
            .context("decoder graph failed")?
            .into_iter();
        let logits = outputs.next().context("decoder returned no logits")?;
        let vocab = self.shape.vocab_size;
        ensure!(
            logits.shape() == [batch, vocab],
            "decoder returned logits of shape {:?}",
            logits.shape()
        );
        let rows = logits
            .try_as_plain_ram()?
            .as_slice::<f32>()?
            .chunks(vocab)
            .map(<[f32]>::to_vec)
            .collect();
        Ok((rows, outputs.collect()))
    }
}

/// The cache's inputs (`past_key_0`, `past_value_0`, ...) and outputs (`present_...`), in the graph's order.
pub(crate) fn cache_names(layers: usize) -> (Vec<String>, Vec<String>) {
    let names: Vec<String> = (0..layers)
        .flat_map(|l| [format!("key_{l}"), format!("value_{l}")])
        .collect();
    let with = |prefix: &str| names.iter().map(|n| format!("{prefix}_{n}")).collect();
    (with("past"), with("present"))
}

/// One caption's decoding state: the cache rows of the sequences still being extended.
pub struct Session<'d> {
    decoder: &'d Decoder,
    /// `present_*` of the last call, `[rows, heads, position, head_dim]` each.
    cache: Vec<TValue>,
    /// Next position id: the number of positions already in the cache.
    position: usize,
}

impl Step for Session<'_> {
    fn step(&mut self, sources: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let width = self.decoder.shape.width;
        ensure!(
            !tokens.is_empty() && sources.len() == tokens.len(),
            "a step needs one source row per token"
        );
        let cache = gather_rows(&self.cache, sources)?;
        let embeds = self.decoder.token_embeddings(tokens)?;
        let embeds = Tensor::from_shape(&[tokens.len(), 1, width], &embeds)?;
        let positions = Tensor::from_shape(
            &[tokens.len(), 1],
            &vec![self.position as i64; tokens.len()],
        )?;
        let (logits, cache) = self.decoder.run(embeds, positions, cache)?;
        self.cache = cache;
        self.position += 1;
        Ok(logits)
    }
}

/// Beam `b` of the next call continues row `sources[b]`: gather every cache tensor along the batch axis.
fn gather_rows(cache: &[TValue], sources: &[usize]) -> Result<Vec<TValue>> {
    let rows = cache
        .first()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(0);
    ensure!(
        sources.iter().all(|&s| s < rows),
        "source row out of range: {sources:?} of {rows} rows"
    );
    if sources.iter().copied().eq(0..rows) {
        return Ok(cache.to_vec());
    }
    cache
        .iter()
        .map(|t| {
            let view = t.to_plain_array_view::<f32>()?;
            Ok(view
                .select(tract_ndarray::Axis(0), sources)
                .into_tensor()
                .into_tvalue())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_decoder_runs_the_faster_rewrites() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixture-tiny/decoder.int8.onnx");
        let bytes = std::fs::read(&path).unwrap();
        let shape = DecoderShape {
            layers: 2,
            heads: 2,
            width: 32,
            vocab_size: 50257,
        };
        let table = TokenEmbeddings::from_f32_bytes(&vec![0; 50257 * 32 * 4], 50257, 32).unwrap();
        let decoder = Decoder::load(&path, bytes, shape, || Ok(table)).unwrap();
        let ops = crate::runtime::graph::tests::op_names(decoder.plan.model());
        let count = |name: &str| ops.iter().filter(|op| *op == name).count();
        assert_eq!(count("GeluApproximate"), 2, "{ops:?}");
        assert_eq!(count("PowConst"), 0, "{ops:?}");
        assert!(count("DynamicQuantizeU8") > 0, "{ops:?}");
        assert_eq!(count("DynamicQuantizeLinearU8"), 0, "{ops:?}");
        assert_eq!(count("LastAxisSoftmax"), 2, "{ops:?}");
        assert_eq!(count("Softmax"), 0, "{ops:?}");
        assert_eq!(count("AttentionMatMul"), 4, "{ops:?}");
        assert_eq!(count("OptMatMul"), 0, "{ops:?}");
        crate::runtime::graph::tests::assert_int8_products_on_our_kernel(&path, &decoder.plan);
    }

    #[test]
    fn gather_reorders_and_duplicates_rows() {
        let t = Tensor::from_shape(&[3, 1, 2, 1], &[0f32, 1., 10., 11., 20., 21.])
            .unwrap()
            .into_tvalue();
        let out = gather_rows(std::slice::from_ref(&t), &[2, 0, 0]).unwrap();
        assert_eq!(out[0].shape(), &[3, 1, 2, 1]);
        assert_eq!(
            out[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            &[20., 21., 0., 1., 0., 1.]
        );
        let same = gather_rows(std::slice::from_ref(&t), &[0, 1, 2]).unwrap();
        assert_eq!(
            same[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap()
        );
        let fewer = gather_rows(&[t], &[1]).unwrap();
        assert_eq!(
            fewer[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            &[10., 11.]
        );
        assert!(gather_rows(&fewer, &[1]).is_err());
    }
}
