//! Our own ops, each computing exactly what the graph's op computed (integer sums, the same float formula), so
//! that the token ids do not depend on which CPU picked them.

pub(crate) mod dynamic_quantize;
#[cfg(target_arch = "x86_64")]
pub(crate) mod int8_matmul;
#[cfg(target_arch = "x86_64")] // only `int8_matmul` uses it
pub(crate) mod spin_pool;
