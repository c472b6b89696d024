//! Our own ops, each computing exactly what the graph's op computed (integer sums, the same float formula, tract's
//! own f32 sums) or, for the softmax and the attention products at a few rows, the same bits on every CPU, so that
//! the token ids do not depend on which CPU picked them.

/// Defines a function that runs its body compiled for the widest vectors this CPU has: on x86-64 AVX-512, else
/// AVX2, else the baseline's SSE2 (the build targets the baseline, so plain loops otherwise get SSE2 only);
/// elsewhere the baseline. Only for bodies whose every operation rounds alike at any width (plain f32 arithmetic,
/// no fused multiply-add, a fixed order): whichever runs, the results are the same bits. Functions the body calls
/// must be `#[inline(always)]` to be compiled with it. A module of the same name holds each compilation
/// (`baseline`, and on x86-64 `avx2` and `avx512`), for the tests that check they agree.
macro_rules! widest_vectors {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { $name::avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { $name::avx2($($arg),*) };
                }
            }
            $name::baseline($($arg),*)
        }

        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[inline(always)]
            pub(super) fn baseline($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            pub(super) unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                baseline($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                baseline($($arg),*)
            }
        }
    };
}

pub(crate) mod attention_matmul;
pub(crate) mod dynamic_quantize;
pub(crate) mod int8_matmul;
pub(crate) mod softmax;
pub(crate) mod spin_pool;
