//! Kernel descriptions: what the fuser produces and code generation compiles.
//!
//! A loop kernel ([`LoopKernel`]) computes one output buffer by evaluating a small scalar
//! program ([`Scalar`] ops in SSA order) at every point of an iteration space, reading its
//! inputs through strided [`Access`]es (stride 0 broadcasts). Optionally it reduces over the
//! trailing axes of the space ([`Reduction`]) or walks a pooling window ([`Window`]).
//! Contractions (convolution, matrix multiply) are [`Contraction`]s whose core is a GEMM and
//! whose epilogue is a loop kernel applied to each output tile.
//!
//! Every kernel is pure data: two kernels that are equal compile to the same code, which is
//! what the kernel cache keys on.

use crate::graph::{BinaryOp, UnaryOp};

/// How one input buffer is read: element `(i_0, ..., i_{r-1})` of the iteration space reads
/// `buf[offset + Σ i_k * strides[k]]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// Which kernel input buffer.
    pub input: usize,
    pub strides: Vec<isize>,
    pub offset: isize,
}

/// One step of a kernel's scalar program; operands are indices of earlier steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    /// The value of access `i` at the current point.
    Load(usize),
    Const(f32),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// `c != 0 ? a : b`
    Select(usize, usize, usize),
    /// Inside a reduction's epilogue: the reduced value.
    Reduced,
}

/// A reduction over the trailing `axes` dimensions of the iteration space: the program's last
/// step is combined with `op` over those axes; the output has the leading dimensions only, and
/// `epilogue` (which may use [`Scalar::Reduced`] and loads indexed by the leading dimensions)
/// is applied to each result.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduction {
    pub op: crate::graph::ReduceOp,
    /// How many trailing dimensions of the iteration space are reduced.
    pub axes: usize,
    pub epilogue: Vec<Scalar>,
    /// Accesses used by the epilogue, over the leading (output) dimensions.
    pub epilogue_accesses: Vec<Access>,
    /// Further results of the same pass (sibling reductions merged by the fuser, e.g.
    /// batchnorm's `Σdy` and `Σdy·(x - mean)`): each reduces another step of the program with
    /// the same `op` and has its own epilogue (over `epilogue_accesses`). Result `i` goes to
    /// the kernel's extra output `i`, laid out like the main output.
    pub more: Vec<MoreResult>,
}

/// One further result of a [`Reduction`].
#[derive(Debug, Clone, PartialEq)]
pub struct MoreResult {
    /// The program step reduced.
    pub step: usize,
    /// As [`Reduction::epilogue`] (empty: the reduced value itself).
    pub epilogue: Vec<Scalar>,
}

/// A pooling window over the last two dimensions: the iteration space is the output
/// `[.., OH, OW]`; access 0 reads the input `[.., H, W]` (its strides given for the input).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    pub max: bool,
    pub count_include_pad: bool,
    pub in_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// [top, bottom, left, right]
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
}

/// An elementwise, reduction or pooling kernel over one iteration space.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopKernel {
    /// The iteration space (for a plain elementwise kernel, the output shape).
    pub shape: Vec<usize>,
    pub num_inputs: usize,
    pub accesses: Vec<Access>,
    /// Evaluated at each point; the last step is the value stored (or reduced).
    pub program: Vec<Scalar>,
    pub reduction: Option<Reduction>,
    pub window: Option<Window>,
}

/// The core of a convolution or matrix multiply, done by GEMM on packed operands, followed by
/// an epilogue over each output tile.
#[derive(Debug, Clone, PartialEq)]
pub struct Contraction {
    pub kind: ContractionKind,
    /// Applied to the GEMM result: an elementwise loop kernel over the output shape whose
    /// access 0 is the raw contraction result (bias, folded batchnorm, activation, residual
    /// add...). Other accesses read the contraction's extra inputs.
    pub epilogue: Option<LoopKernel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContractionKind {
    /// x[N, C, H, W] * w[O, C/g, KH, KW] -> [N, O, OH, OW]
    Conv2d {
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        o: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    },
    /// a[B, M, K] * b[B, K, N] (or b[B, N, K] transposed) -> [B, M, N]
    MatMul {
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        transpose_b: bool,
    },
}
