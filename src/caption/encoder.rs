//! The image encoder graph: `pixel_values [1, 3, S, S]` -> `image_embeds [1, E]`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::runtime::graph::FixedGraph;

pub struct Encoder {
    graph: FixedGraph,
}

impl Encoder {
    pub fn load(
        path: &Path,
        bytes: Vec<u8>,
        input_size: usize,
        embedding_size: usize,
    ) -> Result<Encoder> {
        let graph = FixedGraph::load(
            path,
            bytes,
            ("pixel_values", &[1, 3, input_size, input_size]),
            ("image_embeds", &[1, embedding_size]),
        )?;
        Ok(Encoder { graph })
    }

    /// `pixels`: `[3, S, S]` channels first, as the preprocessor makes them.
    pub fn encode(&self, pixels: Vec<f32>) -> Result<Vec<f32>> {
        self.graph.run(pixels).context("image encoder failed")
    }
}
