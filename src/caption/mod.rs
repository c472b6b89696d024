//! The captioning chain, in its order: an image file or frame is decoded and turned into the encoder's tensor
//! (`preprocess`), encoded to a CLIP embedding (`encoder`), mapped to a prefix of GPT-2 input embeddings
//! (`mapper`), and decoded token by token (`decoder`, with its token table `embeddings`) under the pure `search`;
//! `tokenizer` turns the ids into text. `captioner` loads a bundle's graphs and runs the chain.

pub mod captioner;
pub(crate) mod decoder;
pub(crate) mod embeddings;
pub(crate) mod encoder;
pub(crate) mod mapper;
pub mod preprocess;
pub mod search;
pub(crate) mod tokenizer;
