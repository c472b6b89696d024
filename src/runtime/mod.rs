//! tract, and only tract: ONNX bytes to optimised plans (`graph`), the rewrites that put our exact, faster ops in
//! them (`rewrite`), and those ops (`kernels`). Knows nothing of images or captions.

pub(crate) mod graph;
pub(crate) mod kernels;
pub(crate) mod rewrite;
