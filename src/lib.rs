//! On-device CapDec image captioning: a model bundle (docs/bundle-format.md) run through tract, and the daemon
//! that captions cameras and publishes over MQTT.
//!
//! Data flows one way, down this list: `bundle` (the model files, verified) -> `runtime` (tract: graphs,
//! rewrites, our kernels; nothing of captions) -> `caption` (image -> preprocess -> encode -> map -> decode with
//! search -> text) -> `daemon` (cameras in, captions out over MQTT) and `eval` (captions scored against
//! references). No module reaches back up the list.

pub mod bench;
pub mod bundle;
pub mod caption;
pub mod daemon;
pub mod eval;
mod located;
mod memory;
mod runtime;
// Entry points for the fuzz targets in fuzz/ (cargo fuzz builds with `--cfg fuzzing`), into crate-private parsers.
#[cfg(fuzzing)]
pub mod fuzzing;

// The captioner and the image files it reads, at the crate's top: what a library user starts from.
pub use caption::{captioner, preprocess};
