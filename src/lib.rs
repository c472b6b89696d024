//! On-device CapDec image captioning: a model bundle (docs/bundle-format.md) run through tract, and the daemon
//! that captions cameras and publishes over MQTT.
//!
//! Data flows one way: `bundle` -> `graph` -> `encoder`, `mapper`, `decoder` (with `embeddings`), driven by the
//! pure `search` and rendered by `tokenizer`; `preprocess` turns files into tensors; `captioner` ties them.
//! The daemon: `config` -> `sources` (frames) -> `captioner` -> `publish` (MQTT), scheduled by `daemon`.
//! `capdec eval`: `eval` reads the references file, `metrics` scores captions against it; nothing upstream
//! depends on either.

pub mod bench;
pub mod bundle;
pub mod captioner;
pub mod config;
pub mod daemon;
pub mod decoder;
pub mod embeddings;
pub mod encoder;
pub mod eval;
pub mod graph;
#[cfg(target_arch = "x86_64")]
pub mod int8_matmul;
pub mod logging;
pub mod mapper;
pub mod metrics;
pub mod preprocess;
pub mod publish;
pub mod rewrite;
pub mod search;
pub mod sources;
#[cfg(target_arch = "x86_64")] // only `int8_matmul` uses it
pub mod spin_pool;
pub mod tokenizer;
