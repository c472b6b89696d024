//! Our own ops, each computing exactly what the graph's op computed (integer sums, the same float formula) or, for
//! the softmax and the attention products, the same bits on every CPU, so that the token ids do not depend on which
//! CPU picked them.

pub(crate) mod attention_matmul;
pub(crate) mod dynamic_quantize;
pub(crate) mod int8_matmul;
pub(crate) mod softmax;
pub(crate) mod spin_pool;
