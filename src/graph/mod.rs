//! The primitive-op IR: what every layer lowers to, and what the reference interpreter, the
//! fuser and code generation consume.
//!
//! In: built by `lower` from a [`crate::layer_graph::LayerGraph`] (and later by `autodiff`).
//! Out: a DAG of about twenty primitive ops over f32 tensors with concrete shapes, batch
//! dimension included (`[N, C, H, W]`, `[N, F]`). Nodes are in topological order: a node's
//! inputs always have smaller ids.
//!
//! One enum, [`Op`], holds every primitive, grouped by kind. Elementwise binary ops broadcast
//! like NumPy (shapes aligned at the right; a dimension of 1 stretches).

mod print;

use std::sync::Arc;

pub use print::{graph_dot, graph_json, graph_text};

pub type ValueId = usize;

/// Every primitive op.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    // ---- leaves: no inputs ----
    /// A model input, by name.
    Input {
        name: String,
    },
    /// A parameter or buffer of the layer graph, by index into `LayerGraph::params`.
    Param {
        index: usize,
    },
    /// A scalar constant (shape `[]`), broadcast by the ops that use it.
    Scalar {
        value: f32,
    },
    /// A constant tensor (folded weights, fixed inline values), row-major.
    Tensor {
        data: Arc<[f32]>,
    },

    // ---- contractions ----
    /// `(x[N, C, H, W], w[O, C/groups, KH, KW]) -> [N, O, OH, OW]`, no bias.
    Conv2d {
        stride: [usize; 2],
        /// [top, bottom, left, right]
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    },
    /// `(a[.., M, K], b[.., K, N]) -> [.., M, N]`; with `transpose_b`, `b` is `[.., N, K]`.
    /// Leading (batch) dimensions must be equal.
    MatMul {
        transpose_b: bool,
    },

    // ---- elementwise ----
    Unary(UnaryOp),
    /// NumPy-broadcasting binary op.
    Binary(BinaryOp),
    /// `(cond, a, b) -> cond != 0 ? a : b`, broadcasting.
    Select,

    // ---- reductions (dimensions kept, with size 1) ----
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },

    // ---- windows over the last two dimensions of [N, C, H, W] ----
    Pool {
        op: PoolOp,
        kernel: [usize; 2],
        stride: [usize; 2],
        /// [top, bottom, left, right]
        padding: [usize; 4],
        dilation: [usize; 2],
        /// PyTorch's ceil mode: a last, partial window when it starts inside the input or the
        /// top/left padding.
        ceil_mode: bool,
    },
    /// PyTorch's adaptive average pooling: window `i` spans `floor(i*H/o)..ceil((i+1)*H/o)`.
    AdaptiveAvgPool {
        output: [usize; 2],
    },

    // ---- movement ----
    /// Same elements, new shape.
    Reshape,
    /// `out.dims[i] = in.dims[perm[i]]`.
    Permute {
        perm: Vec<usize>,
    },
    /// Joins along an axis.
    Concat {
        axis: usize,
    },
    /// `in[.., start..end, ..]` along `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },

    /// Broadcasts to the node's shape (NumPy rules: aligned at the right, dimensions of 1
    /// stretch). The shape is given, not inferred. Autodiff's gradient of reductions.
    Expand,
    /// Zeros around `in` along `axis`: `before` in front, `after` behind. Autodiff's gradient
    /// of `Slice`.
    Pad {
        axis: usize,
        before: usize,
        after: usize,
    },

    // ---- gradient primitives (autodiff emits these; the shape is given) ----
    /// The gradient of [`Op::Conv2d`] with respect to its input:
    /// `(dy[N, O, OH, OW], w[O, C/groups, KH, KW]) -> dx[N, C, H, W]` (a transposed convolution).
    Conv2dBackwardData {
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    },
    /// The gradient of [`Op::Conv2d`] with respect to its weight:
    /// `(x[N, C, H, W], dy[N, O, OH, OW]) -> dw[O, C/groups, KH, KW]`.
    Conv2dBackwardWeight {
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    },
    /// The gradient of [`Op::Pool`] with respect to its input: `(x, dy) -> dx` (shape of `x`).
    /// Max pooling sends each output's gradient to the first largest tap of its window, as
    /// PyTorch does; average pooling spreads it over the window with the forward divisor.
    PoolBackward {
        op: PoolOp,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        ceil_mode: bool,
    },
    /// The gradient of [`Op::AdaptiveAvgPool`]: `dy[N, C, OH, OW] -> dx[N, C, H, W]`.
    AdaptiveAvgPoolBackward,

    // ---- randomness ----
    /// A 0/1 mask keeping each element with probability `1 - p` (dropout), from a seeded
    /// generator: the same seed and step give the same mask.
    RandomMask {
        p: f32,
        seed: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    /// `x < 0 ? 0 : x`: NaN stays NaN (PyTorch's `relu`).
    Relu,
    Exp,
    Log,
    Sqrt,
    /// `1 / sqrt(x)`
    Rsqrt,
    /// `1 / x`
    Recip,
    Tanh,
    Sigmoid,
    Abs,
    /// The identity, through which autodiff passes no gradient (PyTorch's `detach`): for
    /// terms whose derivative is known to vanish, so the backward pass skips their work.
    Detach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// The larger operand, NaN if either is NaN (`torch.maximum`).
    Max,
    /// The smaller operand, NaN if either is NaN (`torch.minimum`).
    Min,
    /// `a ^ b` (b is usually a scalar)
    Pow,
    /// `1.0` where `a > b`, else `0.0`
    Greater,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolOp {
    Max,
    /// With `count_include_pad`, padding counts in the divisor (but ceil mode's extra cells
    /// outside the padded input never do, as in PyTorch).
    Avg {
        count_include_pad: bool,
    },
}

impl UnaryOp {
    /// The op applied to one f64 value: the definition every backend must agree with.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            // PyTorch's `clamp_min(x, 0)`: NaN stays NaN, -0 stays -0.
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Detach => x,
        }
    }
}

impl BinaryOp {
    /// The op applied to two f64 values: the definition every backend must agree with.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            // `torch.maximum`/`torch.minimum`: NaN if either operand is NaN.
            BinaryOp::Max => nan_or(a, b, a.max(b)),
            BinaryOp::Min => nan_or(a, b, a.min(b)),
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Greater => f64::from(a > b),
        }
    }
}

/// `v`, or NaN when `a` or `b` is NaN (as PyTorch's `maximum`/`minimum`/`max`: NaN is never
/// dropped, so a NaN weight cannot be hidden by a ReLU or a max).
fn nan_or(a: f64, b: f64, v: f64) -> f64 {
    if a.is_nan() {
        a
    } else if b.is_nan() {
        b
    } else {
        v
    }
}

/// One value of the graph: the op that computes it, its inputs and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub shape: Vec<usize>,
    /// The layer this node came from (its module path), for printing and profiling.
    pub origin: String,
}

/// A primitive-op graph with its named inputs and outputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub inputs: Vec<(String, ValueId)>,
    pub outputs: Vec<(String, ValueId)>,
}

/// NumPy broadcasting of two shapes, or None when they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Graph {
    /// Appends a node; its shape must already be known (see [`Graph::infer`]).
    pub fn push(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
        origin: &str,
    ) -> ValueId {
        debug_assert!(inputs.iter().all(|&i| i < self.nodes.len()));
        self.nodes.push(Node {
            op,
            inputs,
            shape,
            origin: origin.to_string(),
        });
        self.nodes.len() - 1
    }

    /// Appends a node, inferring its shape. Panics on inconsistent shapes: callers (lowering,
    /// autodiff) build graphs from already-checked layer graphs, so a mismatch is a bug in
    /// netc, never a user error.
    pub fn add(&mut self, op: Op, inputs: Vec<ValueId>, origin: &str) -> ValueId {
        let shape = self.infer(&op, &inputs);
        self.push(op, inputs, shape, origin)
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.nodes[v].shape
    }

    /// The output shape of `op` applied to `inputs`.
    pub fn infer(&self, op: &Op, inputs: &[ValueId]) -> Vec<usize> {
        let s = |i: usize| self.nodes[inputs[i]].shape.clone();
        match op {
            Op::Input { .. }
            | Op::Param { .. }
            | Op::Tensor { .. }
            | Op::Reshape
            | Op::Expand
            | Op::Conv2dBackwardData { .. }
            | Op::Conv2dBackwardWeight { .. }
            | Op::AdaptiveAvgPoolBackward => {
                panic!("the shape of {op:?} is given, not inferred")
            }
            Op::Scalar { .. } => vec![],
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => {
                let (x, w) = (s(0), s(1));
                assert_eq!(x.len(), 4, "conv input");
                assert_eq!(x[1], w[1] * groups, "conv channels");
                let out = |n: usize, pad: usize, k: usize, st: usize, d: usize| {
                    (n + pad - d * (k - 1) - 1) / st + 1
                };
                vec![
                    x[0],
                    w[0],
                    out(x[2], padding[0] + padding[1], w[2], stride[0], dilation[0]),
                    out(x[3], padding[2] + padding[3], w[3], stride[1], dilation[1]),
                ]
            }
            Op::MatMul { transpose_b } => {
                let (a, b) = (s(0), s(1));
                let r = a.len();
                assert!(r >= 2 && b.len() == r, "matmul ranks");
                assert_eq!(a[..r - 2], b[..r - 2], "matmul batch dims");
                let (k2, n) = if *transpose_b {
                    (b[r - 1], b[r - 2])
                } else {
                    (b[r - 2], b[r - 1])
                };
                assert_eq!(a[r - 1], k2, "matmul inner dims");
                let mut out = a[..r - 1].to_vec();
                out.push(n);
                out
            }
            Op::Unary(_) | Op::RandomMask { .. } | Op::PoolBackward { .. } => s(0),
            Op::Pad {
                axis,
                before,
                after,
            } => {
                let mut x = s(0);
                x[*axis] += before + after;
                x
            }
            Op::Binary(_) => broadcast_shapes(&s(0), &s(1)).expect("broadcastable"),
            Op::Select => {
                let ab = broadcast_shapes(&s(1), &s(2)).expect("broadcastable");
                broadcast_shapes(&s(0), &ab).expect("broadcastable")
            }
            Op::Reduce { axes, .. } => {
                let mut x = s(0);
                for &a in axes {
                    x[a] = 1;
                }
                x
            }
            Op::Pool {
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
                ..
            } => {
                let x = s(0);
                vec![
                    x[0],
                    x[1],
                    pool_out(
                        x[2],
                        [padding[0], padding[1]],
                        kernel[0],
                        stride[0],
                        dilation[0],
                        *ceil_mode,
                    ),
                    pool_out(
                        x[3],
                        [padding[2], padding[3]],
                        kernel[1],
                        stride[1],
                        dilation[1],
                        *ceil_mode,
                    ),
                ]
            }
            Op::AdaptiveAvgPool { output } => {
                let x = s(0);
                vec![x[0], x[1], output[0], output[1]]
            }
            Op::Permute { perm } => {
                let x = s(0);
                perm.iter().map(|&p| x[p]).collect()
            }
            Op::Concat { axis } => {
                let mut out = s(0);
                out[*axis] = inputs.iter().map(|&i| self.nodes[i].shape[*axis]).sum();
                out
            }
            Op::Slice { axis, start, end } => {
                let mut x = s(0);
                assert!(start < end && *end <= x[*axis], "slice bounds");
                x[*axis] = end - start;
                x
            }
        }
    }
}

/// Output size of a pooling window along one axis, PyTorch's rule: in ceil mode the last
/// window must start inside the input or the leading padding.
pub fn pool_out(
    n: usize,
    pad: [usize; 2],
    k: usize,
    stride: usize,
    dilation: usize,
    ceil: bool,
) -> usize {
    let span = n + pad[0] + pad[1] - dilation * (k - 1) - 1;
    let mut out = if ceil {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil && (out - 1) * stride >= n + pad[0] {
        out -= 1;
    }
    out
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A stable seed for a layer's random mask, from its path (FNV-1a).
pub fn path_seed(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The seed an [`Op::RandomMask`] with seed `seed` uses at step `step` of a run: `seed` itself
/// at step 0 (what the reference interpreter evaluates), a fresh stream for every other step.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    if step == 0 {
        seed
    } else {
        crate::reference::ops::splitmix64(seed, step)
    }
}
