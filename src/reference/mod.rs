//! The reference interpreter: a plain, slow, obviously-correct evaluator of every primitive op.
//!
//! In: a primitive-op [`Graph`] (from [`crate::lower`]), its parameters and its inputs as
//! `ndarray` arrays of f32 or f64. Out: the graph's outputs, in order.
//!
//! This is the oracle every other backend (JIT kernels, fused code) is tested against, so it
//! favours clarity over speed: one function per op in [`ops`], plain nested loops, no fusion,
//! no clever indexing. Each op's doc comment states its exact semantics, which are PyTorch's.
//!
//! Arithmetic happens in the element type `T` ([`Real`]: f32 or f64): sums accumulate in `T`,
//! in index order. Elementwise functions go through [`UnaryOp::apply`] and
//! [`BinaryOp::apply`] (defined in f64 in `graph`), converting each value to f64 and back, so
//! that every backend shares one definition. Constants of the IR ([`Op::Scalar`],
//! [`Op::Tensor`]) are f32 and are widened exactly to `T`.
//!
//! [`UnaryOp::apply`]: crate::graph::UnaryOp::apply
//! [`BinaryOp::apply`]: crate::graph::BinaryOp::apply

mod check;
pub mod ops;

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

use ndarray::ArrayD;

use crate::graph::{Graph, Op};

pub use check::check_node;

/// The element types the interpreter runs in: f32 and f64.
pub trait Real:
    Copy
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
    + Send
    + Sync
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    /// The type's name, for messages.
    const NAME: &'static str;
    /// Rounds an f64 to `Self` (exact for f64).
    fn from_f64(x: f64) -> Self;
    /// Widens to f64 (always exact).
    fn to_f64(self) -> f64;
    /// Widens an f32 to `Self` (always exact).
    fn from_f32(x: f32) -> Self;
    /// A count (window sizes, numbers of elements), rounded to `Self`.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
    fn is_nan(self) -> bool;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    const NAME: &'static str = "f32";
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f32(x: f32) -> f32 {
        x
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    const NAME: &'static str = "f64";
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f32(x: f32) -> f64 {
        f64::from(x)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// Runs `g` and returns the values of `g.outputs`, in order.
///
/// `params[i]` is the value of `Op::Param { index: i }` (the layer graph's parameter index);
/// entries the graph never uses may be anything (e.g. empty arrays). `inputs` gives every
/// `Op::Input` by name. The graph is checked first — node order, every op's input and output
/// shapes ([`check_node`]), input names and shapes, parameter shapes — and any mismatch is an
/// `Err` with a message naming the node, never a panic.
pub fn run<T: Real>(
    g: &Graph,
    params: &[ArrayD<T>],
    inputs: &[(&str, ArrayD<T>)],
) -> Result<Vec<ArrayD<T>>, String> {
    check_graph(g, params, inputs)?;
    let mut values: Vec<ArrayD<T>> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let v = match &node.op {
            Op::Input { name } => {
                let (_, a) = inputs
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("checked by check_graph");
                a.clone()
            }
            Op::Param { index } => params[*index].clone(),
            op => {
                let ins: Vec<&ArrayD<T>> = node.inputs.iter().map(|&i| &values[i]).collect();
                eval_node(op, &ins, &node.shape)
            }
        };
        values.push(v);
    }
    Ok(g.outputs.iter().map(|(_, v)| values[*v].clone()).collect())
}

/// Evaluates one op on its input values, producing a value of shape `out_shape`.
///
/// For op-level tests. The shapes must be consistent (see [`check_node`]); otherwise this
/// panics. `Op::Input` and `Op::Param` have no value of their own and panic here: [`run`]
/// supplies them.
pub fn eval_node<T: Real>(op: &Op, inputs: &[&ArrayD<T>], out_shape: &[usize]) -> ArrayD<T> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
    if let Err(e) = check_node(op, &shapes, out_shape) {
        panic!("eval_node: {e}");
    }
    match op {
        Op::Input { name } => panic!("eval_node: the input `{name}` is a leaf; `run` supplies it"),
        Op::Param { index } => {
            panic!("eval_node: parameter {index} is a leaf; `run` supplies it")
        }
        Op::Scalar { value } => ops::scalar(*value),
        Op::Tensor { data } => ops::tensor(data, out_shape),
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => ops::conv2d(inputs[0], inputs[1], *stride, *padding, *dilation, *groups),
        Op::MatMul { transpose_b } => ops::matmul(inputs[0], inputs[1], *transpose_b),
        Op::Unary(u) => ops::unary(*u, inputs[0]),
        Op::Binary(b) => ops::binary(*b, inputs[0], inputs[1], out_shape),
        Op::Select => ops::select(inputs[0], inputs[1], inputs[2], out_shape),
        Op::Reduce { op, axes } => ops::reduce(*op, axes, inputs[0]),
        Op::Pool {
            op,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode: _,
        } => ops::pool(
            *op, inputs[0], *kernel, *stride, *padding, *dilation, out_shape,
        ),
        Op::AdaptiveAvgPool { output } => ops::adaptive_avg_pool(inputs[0], *output),
        Op::Reshape => ops::reshape(inputs[0], out_shape),
        Op::Permute { perm } => ops::permute(inputs[0], perm),
        Op::Concat { axis } => ops::concat(inputs, *axis),
        Op::Slice { axis, start, end } => ops::slice(inputs[0], *axis, *start, *end),
        Op::RandomMask { p, seed } => ops::random_mask(inputs[0].shape(), *p, *seed),
        Op::Expand => ops::expand(inputs[0], out_shape),
        Op::Pad {
            axis,
            before,
            after,
        } => ops::pad(inputs[0], *axis, *before, *after),
        Op::Conv2dBackwardData {
            stride,
            padding,
            dilation,
            groups,
        } => ops::conv2d_backward_data(
            inputs[0], inputs[1], *stride, *padding, *dilation, *groups, out_shape,
        ),
        Op::Conv2dBackwardWeight {
            stride,
            padding,
            dilation,
            groups,
        } => ops::conv2d_backward_weight(
            inputs[0], inputs[1], *stride, *padding, *dilation, *groups, out_shape,
        ),
        Op::PoolBackward {
            op,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode: _,
        } => ops::pool_backward(
            *op, inputs[0], inputs[1], *kernel, *stride, *padding, *dilation,
        ),
        Op::AdaptiveAvgPoolBackward => ops::adaptive_avg_pool_backward(inputs[0], out_shape),
    }
}

/// Everything [`run`] checks before evaluating anything.
fn check_graph<T: Real>(
    g: &Graph,
    params: &[ArrayD<T>],
    inputs: &[(&str, ArrayD<T>)],
) -> Result<(), String> {
    for (i, (name, _)) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("the input `{name}` is given twice"));
        }
        let known = g
            .nodes
            .iter()
            .any(|n| matches!(&n.op, Op::Input { name: m } if m == name));
        if !known {
            return Err(format!("the graph has no input `{name}`"));
        }
    }
    for (id, node) in g.nodes.iter().enumerate() {
        let at = || format!("node {id} ({:?}, from `{}`)", node.op, node.origin);
        if let Some(&bad) = node.inputs.iter().find(|&&i| i >= id) {
            return Err(format!(
                "{}: input {bad} is not an earlier node (nodes must be in topological order)",
                at()
            ));
        }
        let shapes: Vec<&[usize]> = node
            .inputs
            .iter()
            .map(|&i| g.nodes[i].shape.as_slice())
            .collect();
        check_node(&node.op, &shapes, &node.shape).map_err(|e| format!("{}: {e}", at()))?;
        match &node.op {
            Op::Input { name } => {
                let Some((_, a)) = inputs.iter().find(|(n, _)| n == name) else {
                    return Err(format!("no value given for the input `{name}`"));
                };
                if a.shape() != node.shape.as_slice() {
                    return Err(format!(
                        "the input `{name}` has shape {:?}, the graph expects {:?}",
                        a.shape(),
                        node.shape
                    ));
                }
            }
            Op::Param { index } => {
                let Some(p) = params.get(*index) else {
                    return Err(format!(
                        "{}: parameter {index} is missing ({} parameters given)",
                        at(),
                        params.len()
                    ));
                };
                if p.shape() != node.shape.as_slice() {
                    return Err(format!(
                        "{}: parameter {index} has shape {:?}, the graph expects {:?}",
                        at(),
                        p.shape(),
                        node.shape
                    ));
                }
            }
            _ => {}
        }
    }
    for (name, v) in &g.outputs {
        if *v >= g.nodes.len() {
            return Err(format!(
                "the output `{name}` is node {v}, which does not exist"
            ));
        }
    }
    Ok(())
}
