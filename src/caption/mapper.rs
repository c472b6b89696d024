//! The mapper graph: `clip_embedding [1, E]` -> `prefix_embeds [1, P, W]`, the decoder's prefix.

use std::path::Path;

use anyhow::{Context, Result};

use crate::runtime::graph::FixedGraph;

pub struct Mapper {
    graph: FixedGraph,
}

impl Mapper {
    pub fn load(
        path: &Path,
        bytes: Vec<u8>,
        input_size: usize,
        prefix_length: usize,
        width: usize,
    ) -> Result<Mapper> {
        let graph = FixedGraph::load(
            path,
            bytes,
            ("clip_embedding", &[1, input_size]),
            ("prefix_embeds", &[1, prefix_length, width]),
        )?;
        Ok(Mapper { graph })
    }

    /// The prefix, `[P, W]` row-major.
    pub fn map(&self, embedding: Vec<f32>) -> Result<Vec<f32>> {
        self.graph.run(embedding).context("mapper failed")
    }
}
