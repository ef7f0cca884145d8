//! Fusion: groups primitive ops into kernels ([`kernel`] describes what gets compiled).

mod fuser;
pub mod kernel;
mod siblings;

pub use fuser::*;
mod print;

pub use print::{fused_dot, fused_json, fused_text};
