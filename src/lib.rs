//! On-device CapDec image captioning: a model bundle (docs/bundle-format.md) run through tract.
//!
//! Data flows one way: `bundle` -> `graph` -> `encoder`, `mapper`, `decoder` (with `embeddings`), driven by the
//! pure `search` and rendered by `tokenizer`; `preprocess` turns files into tensors; `captioner` ties them.

pub mod bench;
pub mod bundle;
pub mod captioner;
pub mod decoder;
pub mod embeddings;
pub mod encoder;
pub mod graph;
pub mod mapper;
pub mod preprocess;
pub mod search;
pub mod tokenizer;
