//! tract, and only tract: ONNX bytes to optimised plans (`graph`), the rewrites that put our exact, faster ops in
//! them (`rewrite`), and those ops (`kernels`). Knows nothing of images or captions.

use tract_onnx::tract_core::tract_linalg::multithread::{Executor, set_default_executor};

pub(crate) mod graph;
pub(crate) mod kernels;
pub(crate) mod rewrite;

/// Runs every graph from now on, in the whole process, on `threads` threads: tract's ops on its pool, our int8
/// products on `kernels::spin_pool`'s helpers. One thread runs everything on the caller's.
pub fn use_threads(threads: usize) {
    set_default_executor(if threads <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(threads)
    });
}

/// The cores this process may run on (its CPU affinity, cgroup quota): the default thread count.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
