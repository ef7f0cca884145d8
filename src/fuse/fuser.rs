//! The fusion pass: primitive graph → fused graph.
//!
//! In: a primitive [`Graph`] (inference mode). Out: a [`FusedGraph`]: buffers and a list of
//! kernels in execution order. The rules:
//!
//! 1. **Constants** (values that depend only on parameters and literals: batchnorm's scale and
//!    shift, reshaped biases) are not computed per run: they become buffers evaluated once when
//!    weights are loaded.
//! 2. **Batchnorm folding**: `conv(x, W) * s + t` with a per-channel constant `s` becomes
//!    `conv(x, W * s) + t` (likewise for dense layers): the multiply disappears.
//! 3. **Contraction + epilogue**: a convolution or matrix multiply absorbs the chain of
//!    elementwise ops after it (bias, shift, activation, residual add) while each value in the
//!    chain has one consumer and keeps the output's shape.
//! 4. **Elementwise chains and reductions**: an elementwise value with a single consumer of the
//!    same shape is computed inside that consumer's kernel instead of being stored; a reduction
//!    absorbs its elementwise prologue and the elementwise ops that follow it.
//! 5. **Reshapes** are free (views of the same buffer); concat, permute, slice and adaptive
//!    pooling are host kernels (plain copies and loops in Rust).

use std::collections::HashMap;

use super::kernel::{Access, Contraction, ContractionKind, LoopKernel, Reduction, Scalar, Window};
use crate::graph::{BinaryOp, Graph, Op, PoolOp, ValueId, numel};

pub type BufId = usize;

/// Where a buffer's contents come from.
#[derive(Debug, Clone, PartialEq)]
pub enum BufKind {
    /// A model input, filled by the caller.
    Input(String),
    /// A value computed once from the weights when the model is loaded (a parameter, a folded
    /// weight, a batchnorm scale): the primitive value that defines it.
    Const(ValueId),
    /// An intermediate or output, computed by a kernel.
    Temp,
    /// The same memory as another buffer, with another shape.
    View(BufId),
    /// A parameter that changes between runs (training): `LayerGraph::params[index]`, held by
    /// the executable outside the arena and updated in place by the optimizer.
    Param(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    pub shape: Vec<usize>,
    pub kind: BufKind,
}

/// Work done in Rust rather than generated code: data movement and rare ops.
#[derive(Debug, Clone, PartialEq)]
pub enum HostOp {
    Concat {
        axis: usize,
    },
    Permute {
        perm: Vec<usize>,
    },
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    AdaptiveAvgPool {
        output: [usize; 2],
    },
    RandomMask {
        p: f32,
        seed: u64,
    },
    Pad {
        axis: usize,
        before: usize,
        after: usize,
    },
    /// `(dy, w, epilogue extras...) -> dx`: col = wᵀ·dy by GEMM per image, scattered back
    /// (col2im), or in Winograd form. With an epilogue (as a [`Contraction`]'s: access 0 the
    /// raw gradient, e.g. the ReLU gradient `· (y > 0)` of the layer before), applied to each
    /// image's gradient while it is still in cache where the pass allows it.
    Conv2dBackwardData(ContractionKind, Option<Box<LoopKernel>>),
    /// `(x, dy) -> dw`: Σ_images dy·im2col(x)ᵀ by GEMM.
    Conv2dBackwardWeight(ContractionKind),
    /// `(x, dy) -> dx`: a pooling window's gradient. With `relu`, also the gradient of the
    /// ReLU whose output `x` is (max pooling only): each output's gradient goes to its chosen
    /// tap only where that tap is positive, so `dy · (x > 0)` needs no pass of its own.
    PoolBackward {
        window: Window,
        relu: bool,
    },
    /// `x -> y`: max pooling, vectorized across output columns.
    MaxPool(Window),
    AdaptiveAvgPoolBackward,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KernelBody {
    Loop(LoopKernel),
    /// inputs: `[x, weight, epilogue extras...]`
    Contraction(Contraction),
    Host(HostOp),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FusedKernel {
    pub body: KernelBody,
    pub inputs: Vec<BufId>,
    pub output: BufId,
    /// Further outputs: those of a reduction's further results ([`Reduction::more`]), in
    /// order, each shaped like `output`.
    pub more_outputs: Vec<BufId>,
    /// The primitive ops this kernel computes, in order (for printing and profiling).
    pub ops: Vec<String>,
    /// The layers they came from.
    pub origin: String,
}

/// The result of fusion: what the planner and code generation consume.
#[derive(Debug, Clone)]
pub struct FusedGraph {
    /// The primitive graph after rewrites; constant buffers refer to its values.
    pub prims: Graph,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<FusedKernel>,
    pub inputs: Vec<(String, BufId)>,
    pub outputs: Vec<(String, BufId)>,
}

/// Ops computed per element inside loop kernels. `Expand` is one: a load with broadcast
/// strides.
fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Expand)
}

fn op_name(op: &Op) -> String {
    match op {
        Op::Unary(u) => format!("{u:?}").to_lowercase(),
        Op::Binary(b) => format!("{b:?}").to_lowercase(),
        Op::Select => "select".into(),
        Op::Reduce { op, .. } => format!("reduce_{op:?}").to_lowercase(),
        Op::Conv2d { .. } => "conv2d".into(),
        Op::MatMul { .. } => "matmul".into(),
        Op::Pool {
            op: PoolOp::Max, ..
        } => "maxpool".into(),
        Op::Pool { .. } => "avgpool".into(),
        Op::AdaptiveAvgPool { .. } => "adaptive_avgpool".into(),
        Op::Concat { .. } => "concat".into(),
        Op::Permute { .. } => "permute".into(),
        Op::Slice { .. } => "slice".into(),
        Op::RandomMask { .. } => "random_mask".into(),
        Op::Expand => "expand".into(),
        Op::Pad { .. } => "pad".into(),
        Op::Conv2dBackwardData { .. } => "conv2d_grad_input".into(),
        Op::Conv2dBackwardWeight { .. } => "conv2d_grad_weight".into(),
        Op::PoolBackward {
            op: PoolOp::Max, ..
        } => "maxpool_grad".into(),
        Op::PoolBackward { .. } => "avgpool_grad".into(),
        Op::AdaptiveAvgPoolBackward => "adaptive_avgpool_grad".into(),
        Op::Reshape => "reshape".into(),
        Op::Input { .. } => "input".into(),
        Op::Param { .. } => "param".into(),
        Op::Scalar { .. } => "scalar".into(),
        Op::Tensor { .. } => "tensor".into(),
    }
}

/// Row-major strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i] as isize;
    }
    s
}

/// Strides to read a tensor of `shape` broadcast to `target` (aligned at the right).
pub fn broadcast_strides(shape: &[usize], target: &[usize]) -> Vec<isize> {
    let own = contiguous_strides(shape);
    let off = target.len() - shape.len();
    (0..target.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                own[i - off]
            }
        })
        .collect()
}

/// Fuses a primitive graph whose parameters are all constants (inference).
pub fn fuse(g: &Graph) -> FusedGraph {
    fuse_with(g, &[])
}

/// Fuses a primitive graph in which the parameters with `variable[index] == true` change
/// between runs (training): they are not folded into constants but read from
/// [`BufKind::Param`] buffers. Other parameters (frozen layers) are still constants.
pub fn fuse_with(g: &Graph, variable: &[bool]) -> FusedGraph {
    let g = fold_scales(g, variable);
    Fuser::new(g, variable).run()
}

/// Consumers of each value.
fn consumers(g: &Graph) -> Vec<Vec<ValueId>> {
    let mut c = vec![Vec::new(); g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &x in &n.inputs {
            if !c[x].contains(&i) {
                c[x].push(i);
            }
        }
    }
    for (_, o) in &g.outputs {
        c[*o].push(usize::MAX); // an output is consumed by the caller
    }
    c
}

fn constness(g: &Graph, variable: &[bool]) -> Vec<bool> {
    let mut k = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        k[i] = match n.op {
            Op::Param { index } => !variable.get(index).copied().unwrap_or(false),
            Op::Scalar { .. } | Op::Tensor { .. } => true,
            Op::Input { .. } | Op::RandomMask { .. } => false,
            _ => n.inputs.iter().all(|&x| k[x]),
        };
    }
    k
}

/// Rule 2: `contraction(x, W) * s` with a constant per-output-channel `s` (and the contraction
/// used only there) becomes `contraction(x, W * s')`. Returns a new graph in topological order.
fn fold_scales(g: &Graph, variable: &[bool]) -> Graph {
    let cons = consumers(g);
    let konst = constness(g, variable);
    let mut out = Graph::default();
    let mut map: Vec<ValueId> = vec![usize::MAX; g.nodes.len()];
    // contraction node → (mul node, scale value)
    let mut fold: HashMap<ValueId, (ValueId, ValueId)> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !matches!(n.op, Op::Binary(BinaryOp::Mul)) {
            continue;
        }
        for (c, s) in [(n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])] {
            let cn = &g.nodes[c];
            let per_channel = |axis: usize| {
                let ss = &g.nodes[s].shape;
                ss.len() == cn.shape.len()
                    && ss
                        .iter()
                        .enumerate()
                        .all(|(d, &v)| v == 1 || (d == axis && v == cn.shape[axis]))
            };
            let ok = konst[s]
                && cons[c].len() == 1
                && n.shape == cn.shape
                && konst[cn.inputs.get(1).copied().unwrap_or(0)]
                && match &cn.op {
                    Op::Conv2d { .. } => per_channel(1),
                    Op::MatMul { transpose_b: true } => per_channel(cn.shape.len() - 1),
                    _ => false,
                };
            if ok {
                fold.insert(c, (i, s));
                break;
            }
        }
    }
    let folded_muls: HashMap<ValueId, ValueId> = fold.iter().map(|(&c, &(m, _))| (m, c)).collect();
    // Constants first (they depend only on constants, so this stays topological): a folded
    // scale must exist before the contraction that uses it.
    let order = (0..g.nodes.len())
        .filter(|&i| konst[i])
        .chain((0..g.nodes.len()).filter(|&i| !konst[i]));
    for i in order {
        let n = &g.nodes[i];
        if let Some(&c) = folded_muls.get(&i) {
            map[i] = map[c];
            continue;
        }
        let ins: Vec<ValueId> = n.inputs.iter().map(|&x| map[x]).collect();
        if let Some(&(_, s)) = fold.get(&i) {
            // W' = W * reshape(s) along the weight's output-channel axis.
            let w = ins[1];
            let wshape = out.shape(w).to_vec();
            let mut sshape = vec![1; wshape.len()];
            let o_axis = 0; // conv: [O, C/g, KH, KW]; dense (transpose_b): [O, F]
            sshape[o_axis] = wshape[o_axis];
            let sv = out.push(Op::Reshape, vec![map[s]], sshape, &n.origin);
            let w2 = out.add(Op::Binary(BinaryOp::Mul), vec![w, sv], &n.origin);
            map[i] = out.push(n.op.clone(), vec![ins[0], w2], n.shape.clone(), &n.origin);
            continue;
        }
        map[i] = out.push(n.op.clone(), ins, n.shape.clone(), &n.origin);
    }
    out.inputs = g.inputs.iter().map(|(k, v)| (k.clone(), map[*v])).collect();
    out.outputs = g
        .outputs
        .iter()
        .map(|(k, v)| (k.clone(), map[*v]))
        .collect();
    out
}

/// Whether node `i` is worth recomputing in each consumer: an add, subtract or multiply of
/// one full-size value that is stored anyway (not itself computed inline) and values at most a
/// sixteenth of its size (broadcast per-channel statistics).
fn recomputable(g: &Graph, i: ValueId, inline: &[bool]) -> bool {
    let n = &g.nodes[i];
    if !matches!(
        n.op,
        Op::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul)
    ) {
        return false;
    }
    let size = numel(&n.shape);
    let full: Vec<ValueId> = n
        .inputs
        .iter()
        .copied()
        .filter(|&x| g.nodes[x].shape == n.shape)
        .collect();
    full.len() == 1
        && !inline[full[0]]
        && n.inputs
            .iter()
            .all(|&x| x == full[0] || numel(&g.nodes[x].shape) * 16 <= size)
}

/// Whether consumer `c` (`usize::MAX`: a graph output) can compute a value of `shape` inside
/// its own kernel: an elementwise op over that shape, or a reduction.
fn computes_inline(g: &Graph, c: ValueId, shape: &[usize]) -> bool {
    c != usize::MAX && {
        let cn = &g.nodes[c];
        (is_elementwise(&cn.op) && cn.shape == shape) || matches!(cn.op, Op::Reduce { .. })
    }
}

struct Fuser {
    g: Graph,
    cons: Vec<Vec<ValueId>>,
    konst: Vec<bool>,
    /// Values computed inside their consumer's kernel rather than stored.
    inline: Vec<bool>,
    buf_of: HashMap<ValueId, BufId>,
    /// The buffer of each variable parameter (one per parameter even if several nodes read it).
    param_buf: HashMap<usize, BufId>,
    out: FusedGraph,
}

impl Fuser {
    fn new(g: Graph, variable: &[bool]) -> Fuser {
        let cons = consumers(&g);
        let konst = constness(&g, variable);
        let mut inline = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            // A broadcast is only a load with stride-0 axes: every consumer that can compute
            // it inline does so, however many there are, instead of reading a materialized
            // full-size copy.
            if !konst[i] && matches!(n.op, Op::Expand) && !cons[i].is_empty() {
                inline[i] = cons[i].iter().all(|&c| computes_inline(&g, c, &n.shape));
                continue;
            }
            // A cheap op of one stored full-size value and broadcasts (batchnorm's x - mean):
            // each consumer recomputes it from the same reads instead of reading a stored
            // copy, so it is never written. Its consumers must all be loop kernels over its
            // shape (or reductions of it).
            if !konst[i] && cons[i].len() > 1 && recomputable(&g, i, &inline) {
                inline[i] = cons[i].iter().all(|&c| computes_inline(&g, c, &n.shape));
                continue;
            }
            if konst[i] || !is_elementwise(&n.op) || cons[i].len() != 1 {
                continue;
            }
            inline[i] = computes_inline(&g, cons[i][0], &n.shape);
        }
        let out = FusedGraph {
            prims: Graph::default(),
            buffers: vec![],
            kernels: vec![],
            inputs: vec![],
            outputs: vec![],
        };
        Fuser {
            g,
            cons,
            konst,
            inline,
            buf_of: HashMap::new(),
            param_buf: HashMap::new(),
            out,
        }
    }

    fn new_buf(&mut self, shape: Vec<usize>, kind: BufKind) -> BufId {
        self.out.buffers.push(Buffer { shape, kind });
        self.out.buffers.len() - 1
    }

    /// The buffer holding value `v` (constants get one on first use).
    fn buf(&mut self, v: ValueId) -> BufId {
        if let Some(&b) = self.buf_of.get(&v) {
            return b;
        }
        assert!(self.konst[v], "value %{v} used before it is computed");
        let b = self.new_buf(self.g.nodes[v].shape.clone(), BufKind::Const(v));
        self.buf_of.insert(v, b);
        b
    }

    fn run(mut self) -> FusedGraph {
        let n = self.g.nodes.len();
        // Values no output depends on are never computed.
        let mut live = vec![false; n];
        for (_, v) in &self.g.outputs {
            live[*v] = true;
        }
        for i in (0..n).rev() {
            if live[i] {
                for &x in &self.g.nodes[i].inputs {
                    live[x] = true;
                }
            }
        }
        // Variable parameters and their reshapes exist before any kernel runs: give them
        // buffers first, so a contraction can take a trained bias into its epilogue.
        for i in 0..n {
            let node = &self.g.nodes[i];
            match node.op {
                Op::Param { index } if !self.konst[i] => {
                    let b = match self.param_buf.get(&index) {
                        Some(&b) => b,
                        None => {
                            let b = self.new_buf(node.shape.clone(), BufKind::Param(index));
                            self.param_buf.insert(index, b);
                            b
                        }
                    };
                    self.buf_of.insert(i, b);
                }
                Op::Reshape
                    if !self.konst[i]
                        && matches!(
                            self.buf_of
                                .get(&node.inputs[0])
                                .map(|&b| &self.out.buffers[b].kind),
                            Some(BufKind::Param(_) | BufKind::View(_))
                        ) =>
                {
                    let src = self.buf_of[&node.inputs[0]];
                    let shape = node.shape.clone();
                    let b = self.new_buf(shape, BufKind::View(src));
                    self.buf_of.insert(i, b);
                }
                _ => {}
            }
        }
        let mut i = 0;
        while i < n {
            let node = self.g.nodes[i].clone();
            if !live[i] || self.konst[i] || self.inline[i] || self.buf_of.contains_key(&i) {
                i += 1;
                continue;
            }
            match &node.op {
                Op::Input { name } => {
                    let b = self.new_buf(node.shape.clone(), BufKind::Input(name.clone()));
                    self.buf_of.insert(i, b);
                    self.out.inputs.push((name.clone(), b));
                }
                Op::Reshape => {
                    let src = self.buf(node.inputs[0]);
                    let b = self.new_buf(node.shape.clone(), BufKind::View(src));
                    self.buf_of.insert(i, b);
                }
                Op::Conv2d { .. } | Op::MatMul { .. } => self.contraction(i),
                Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Expand => self.elementwise(i),
                Op::Reduce { .. } => self.reduce(i),
                Op::Pool { .. } => self.pool(i),
                Op::Concat { axis } => self.host(i, HostOp::Concat { axis: *axis }),
                Op::Permute { perm } => self.host(i, HostOp::Permute { perm: perm.clone() }),
                Op::Slice { axis, start, end } => self.host(
                    i,
                    HostOp::Slice {
                        axis: *axis,
                        start: *start,
                        end: *end,
                    },
                ),
                Op::AdaptiveAvgPool { output } => {
                    self.host(i, HostOp::AdaptiveAvgPool { output: *output })
                }
                Op::RandomMask { p, seed } => {
                    self.host(i, HostOp::RandomMask { p: *p, seed: *seed })
                }
                Op::Param { index } => {
                    let b = match self.param_buf.get(index) {
                        Some(&b) => b,
                        None => {
                            let b = self.new_buf(node.shape.clone(), BufKind::Param(*index));
                            self.param_buf.insert(*index, b);
                            b
                        }
                    };
                    self.buf_of.insert(i, b);
                }
                Op::Pad {
                    axis,
                    before,
                    after,
                } => self.host(
                    i,
                    HostOp::Pad {
                        axis: *axis,
                        before: *before,
                        after: *after,
                    },
                ),
                Op::Conv2dBackwardData { .. } => {
                    let kind = self.conv_kind(&node.op, &node.shape, self.shape_of(node.inputs[1]));
                    self.backward_data(i, kind)
                }
                Op::Conv2dBackwardWeight { .. } => {
                    let xs = self.shape_of(node.inputs[0]).to_vec();
                    let kind = self.conv_kind(&node.op, &xs, &node.shape);
                    self.host(i, HostOp::Conv2dBackwardWeight(kind))
                }
                Op::PoolBackward {
                    op,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    ..
                } => {
                    let xs = self.shape_of(node.inputs[0]);
                    let window = Window {
                        max: matches!(op, PoolOp::Max),
                        count_include_pad: matches!(
                            op,
                            PoolOp::Avg {
                                count_include_pad: true
                            }
                        ),
                        in_hw: [xs[2], xs[3]],
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        dilation: *dilation,
                    };
                    match self.relu_after_pool_grad(i, &live) {
                        Some(m) => {
                            let relu = true;
                            self.host(i, HostOp::PoolBackward { window, relu });
                            // The ReLU's gradient is this kernel's output: its consumers read it.
                            let b = self.buf_of[&i];
                            self.buf_of.insert(m, b);
                            self.inline[m] = false;
                            let k = self.out.kernels.last_mut().expect("just pushed");
                            k.ops.push("select".to_string());
                            k.origin = format!("{}, {}", k.origin, self.g.nodes[m].origin);
                        }
                        None => {
                            let relu = false;
                            self.host(i, HostOp::PoolBackward { window, relu })
                        }
                    }
                }
                Op::AdaptiveAvgPoolBackward => self.host(i, HostOp::AdaptiveAvgPoolBackward),
                Op::Scalar { .. } | Op::Tensor { .. } => unreachable!("constant"),
            }
            i += 1;
        }
        self.out.outputs = self
            .g
            .outputs
            .clone()
            .into_iter()
            .map(|(k, v)| (k, self.buf(v)))
            .collect();
        self.out.prims = self.g;
        super::siblings::merge_sibling_reductions(&mut self.out);
        self.out
    }

    fn shape_of(&self, v: ValueId) -> &[usize] {
        &self.g.nodes[v].shape
    }

    /// The convolution geometry of a convolution gradient op, from the forward input's and
    /// weight's shapes.
    fn conv_kind(&self, op: &Op, x: &[usize], w: &[usize]) -> ContractionKind {
        let (Op::Conv2dBackwardData {
            stride,
            padding,
            dilation,
            groups,
        }
        | Op::Conv2dBackwardWeight {
            stride,
            padding,
            dilation,
            groups,
        }) = op
        else {
            unreachable!("a convolution gradient")
        };
        ContractionKind::Conv2d {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o: w[0],
            kernel: [w[2], w[3]],
            stride: *stride,
            padding: *padding,
            dilation: *dilation,
            groups: *groups,
        }
    }

    /// A max pooling's gradient `p = pool_grad(y, dy)` whose only use is autodiff's ReLU
    /// gradient `y != 0 ? p : 0` for the same `y` (a ReLU before the pooling, as in every
    /// classic CNN's stem): that select's node, which the pooling's gradient then computes
    /// itself.
    fn relu_after_pool_grad(&self, p: ValueId, live: &[bool]) -> Option<ValueId> {
        let node = &self.g.nodes[p];
        let Op::PoolBackward {
            op: PoolOp::Max, ..
        } = node.op
        else {
            return None;
        };
        let y = node.inputs[0];
        // (A graph output counts as a consumer past the last node.)
        let &[m] = self.cons[p].as_slice() else {
            return None;
        };
        let mn = self.g.nodes.get(m)?;
        if !live[m] || mn.op != Op::Select || mn.shape != node.shape {
            return None;
        }
        let &[c, t, f] = mn.inputs.as_slice() else {
            return None;
        };
        let zero = matches!(self.g.nodes[f].op, Op::Scalar { value } if value == 0.0);
        (c == y && t == p && zero).then_some(m)
    }

    fn host(&mut self, v: ValueId, op: HostOp) {
        let node = self.g.nodes[v].clone();
        let inputs: Vec<BufId> = node.inputs.iter().map(|&x| self.buf(x)).collect();
        let out = self.new_buf(node.shape.clone(), BufKind::Temp);
        self.buf_of.insert(v, out);
        self.out.kernels.push(FusedKernel {
            body: KernelBody::Host(op),
            inputs,
            output: out,
            more_outputs: vec![],
            ops: vec![op_name(&node.op)],
            origin: node.origin.clone(),
        });
    }

    /// Builds the scalar program computing value `v` at each point of `space`, inlining
    /// producers marked inline. Loads of stored values become accesses over kernel inputs.
    /// (The accumulators are separate arguments because a reduction builds two programs that
    /// share one input list.)
    #[allow(clippy::too_many_arguments)]
    fn program(
        &mut self,
        v: ValueId,
        space: &[usize],
        inputs: &mut Vec<BufId>,
        accesses: &mut Vec<Access>,
        prog: &mut Vec<Scalar>,
        ops: &mut Vec<String>,
        memo: &mut HashMap<ValueId, usize>,
        // Values already available as program steps (e.g. the contraction result).
        given: &HashMap<ValueId, Scalar>,
        // The kernel's root value: computed here even though it is stored.
        root: bool,
    ) -> usize {
        if let Some(&s) = memo.get(&v) {
            return s;
        }
        let node = self.g.nodes[v].clone();
        let step = if let Some(s) = given.get(&v) {
            prog.push(*s);
            prog.len() - 1
        } else if let Op::Scalar { value } = node.op {
            prog.push(Scalar::Const(value));
            prog.len() - 1
        } else if is_elementwise(&node.op)
            && (root || (self.inline[v] && !self.buf_of.contains_key(&v)))
        {
            let args: Vec<usize> = node
                .inputs
                .iter()
                .map(|&x| self.program(x, space, inputs, accesses, prog, ops, memo, given, false))
                .collect();
            if matches!(node.op, Op::Expand) {
                // A broadcast load: the input's accesses already broadcast to the space.
                memo.insert(v, args[0]);
                return args[0];
            }
            ops.push(op_name(&node.op));
            prog.push(match node.op {
                Op::Unary(u) => Scalar::Unary(u, args[0]),
                Op::Binary(b) => Scalar::Binary(b, args[0], args[1]),
                Op::Select => Scalar::Select(args[0], args[1], args[2]),
                _ => unreachable!("inline non-elementwise"),
            });
            prog.len() - 1
        } else {
            let b = self.buf(v);
            let input = match inputs.iter().position(|&x| x == b) {
                Some(p) => p,
                None => {
                    inputs.push(b);
                    inputs.len() - 1
                }
            };
            accesses.push(Access {
                input,
                strides: broadcast_strides(&node.shape, space),
                offset: 0,
            });
            prog.push(Scalar::Load(accesses.len() - 1));
            prog.len() - 1
        };
        memo.insert(v, step);
        step
    }

    /// An elementwise kernel rooted at `v` (its inline producers computed inside it).
    fn elementwise(&mut self, v: ValueId) {
        let node = self.g.nodes[v].clone();
        let space = node.shape.clone();
        let (mut inputs, mut accesses, mut prog, mut ops) = (vec![], vec![], vec![], vec![]);
        let mut memo = HashMap::new();
        self.program(
            v,
            &space,
            &mut inputs,
            &mut accesses,
            &mut prog,
            &mut ops,
            &mut memo,
            &HashMap::new(),
            true,
        );
        let out = self.new_buf(space.clone(), BufKind::Temp);
        self.buf_of.insert(v, out);
        self.out.kernels.push(FusedKernel {
            body: KernelBody::Loop(LoopKernel {
                shape: space,
                num_inputs: inputs.len(),
                accesses,
                program: prog,
                reduction: None,
                window: None,
            }),
            inputs,
            output: out,
            more_outputs: vec![],
            ops,
            origin: node.origin.clone(),
        });
    }

    /// Follows the chain of single-consumer, same-shape elementwise ops after `v`.
    fn epilogue_chain(&self, v: ValueId) -> Vec<ValueId> {
        let mut chain = Vec::new();
        let mut cur = v;
        loop {
            if self.cons[cur].len() != 1 || self.cons[cur][0] == usize::MAX {
                break;
            }
            let c = self.cons[cur][0];
            let cn = &self.g.nodes[c];
            if !is_elementwise(&cn.op) || cn.shape != self.g.nodes[v].shape || self.konst[c] {
                break;
            }
            // The other operands must already be available (computed earlier or constant).
            let ready = cn
                .inputs
                .iter()
                .all(|&x| x == cur || self.available(x, v, 4));
            if !ready {
                break;
            }
            chain.push(c);
            cur = c;
        }
        chain
    }

    /// The epilogue of the kernel computing `v` (a contraction or a convolution's
    /// backward-data pass): the elementwise chain after it ([`Self::epilogue_chain`]) as a
    /// loop kernel over `v`'s shape whose access 0 is the raw result, its other inputs
    /// appended to `inputs` and its ops to `ops`; and the value the kernel's output holds.
    fn epilogue(
        &mut self,
        v: ValueId,
        inputs: &mut Vec<BufId>,
        ops: &mut Vec<String>,
    ) -> (Option<LoopKernel>, ValueId) {
        let chain = self.epilogue_chain(v);
        // Inline-marked producers of chain members are already inlined by `program`; chain
        // members themselves must not be materialized separately.
        let root = chain.last().copied().unwrap_or(v);
        if chain.is_empty() {
            return (None, root);
        }
        let space = self.g.nodes[v].shape.clone();
        for &c in &chain[..chain.len() - 1] {
            self.inline[c] = true;
        }
        let mut given = HashMap::new();
        given.insert(v, Scalar::Load(0));
        let mut ep_inputs: Vec<BufId> = vec![usize::MAX]; // slot 0: the raw result
        let mut accesses = vec![Access {
            input: 0,
            strides: contiguous_strides(&space),
            offset: 0,
        }];
        let mut prog = vec![];
        let mut memo = HashMap::new();
        // `given` maps the contraction value to Load(0), which reads access 0.
        self.program(
            root,
            &space,
            &mut ep_inputs,
            &mut accesses,
            &mut prog,
            ops,
            &mut memo,
            &given,
            true,
        );
        inputs.extend(ep_inputs.iter().skip(1));
        let kernel = LoopKernel {
            shape: space,
            num_inputs: ep_inputs.len(),
            accesses,
            program: prog,
            reduction: None,
            window: None,
        };
        (Some(kernel), root)
    }

    /// A convolution's backward-data pass, with the elementwise chain after it (the ReLU
    /// gradient of the layer before, a residual gradient's sum) as its epilogue.
    fn backward_data(&mut self, v: ValueId, kind: ContractionKind) {
        let node = self.g.nodes[v].clone();
        let mut inputs: Vec<BufId> = node.inputs.iter().map(|&x| self.buf(x)).collect();
        let mut ops = vec![op_name(&node.op)];
        let (epilogue, root) = self.epilogue(v, &mut inputs, &mut ops);
        let out = self.new_buf(node.shape.clone(), BufKind::Temp);
        self.buf_of.insert(root, out);
        self.inline[root] = false;
        self.out.kernels.push(FusedKernel {
            body: KernelBody::Host(HostOp::Conv2dBackwardData(kind, epilogue.map(Box::new))),
            inputs,
            output: out,
            more_outputs: vec![],
            ops,
            origin: node.origin.clone(),
        });
    }

    /// Whether value `x` can be read (or computed inline) by a kernel at node `v`: constant,
    /// stored already, earlier than `v`, or an inline elementwise op of such values (autodiff's
    /// ReLU mask `y > 0`, made after the gradient it masks), looking `depth` ops deep.
    fn available(&self, x: ValueId, v: ValueId, depth: usize) -> bool {
        self.konst[x]
            || self.buf_of.contains_key(&x)
            || x < v
            || (depth > 0
                && self.inline[x]
                && is_elementwise(&self.g.nodes[x].op)
                && self.g.nodes[x]
                    .inputs
                    .iter()
                    .all(|&y| y != v && self.available(y, v, depth - 1)))
    }

    fn contraction(&mut self, v: ValueId) {
        let node = self.g.nodes[v].clone();
        let x = self.buf(node.inputs[0]);
        let w = self.buf(node.inputs[1]);
        let xs = self.g.nodes[node.inputs[0]].shape.clone();
        let ws = self.g.nodes[node.inputs[1]].shape.clone();
        let kind = match &node.op {
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => ContractionKind::Conv2d {
                n: xs[0],
                c: xs[1],
                h: xs[2],
                w: xs[3],
                o: ws[0],
                kernel: [ws[2], ws[3]],
                stride: *stride,
                padding: *padding,
                dilation: *dilation,
                groups: *groups,
            },
            Op::MatMul { transpose_b } => {
                let r = xs.len();
                ContractionKind::MatMul {
                    batch: xs[..r - 2].iter().product(),
                    m: xs[r - 2],
                    k: xs[r - 1],
                    n: node.shape[r - 1],
                    transpose_b: *transpose_b,
                }
            }
            _ => unreachable!(),
        };
        let mut ops = vec![op_name(&node.op)];
        let mut inputs = vec![x, w];
        let (epilogue, root) = self.epilogue(v, &mut inputs, &mut ops);
        let out = self.new_buf(node.shape.clone(), BufKind::Temp);
        // The buffer holds the root's value; the raw result `v` lives only inside the kernel.
        self.buf_of.insert(root, out);
        self.inline[root] = false;
        self.out.kernels.push(FusedKernel {
            body: KernelBody::Contraction(Contraction { kind, epilogue }),
            inputs,
            output: out,
            more_outputs: vec![],
            ops,
            origin: node.origin.clone(),
        });
    }

    fn reduce(&mut self, v: ValueId) {
        let node = self.g.nodes[v].clone();
        let Op::Reduce { op, axes } = &node.op else {
            unreachable!()
        };
        let in_shape = self.g.nodes[node.inputs[0]].shape.clone();
        // Iterate over [kept dims..., reduced dims...].
        let kept: Vec<usize> = (0..in_shape.len()).filter(|d| !axes.contains(d)).collect();
        let order: Vec<usize> = kept.iter().chain(axes.iter()).copied().collect();
        let space: Vec<usize> = order.iter().map(|&d| in_shape[d]).collect();
        // Build the prologue over the natural input space, then permute every access.
        let (mut inputs, mut accesses, mut prog, mut ops) = (vec![], vec![], vec![], vec![]);
        let mut memo = HashMap::new();
        self.program(
            node.inputs[0],
            &in_shape,
            &mut inputs,
            &mut accesses,
            &mut prog,
            &mut ops,
            &mut memo,
            &HashMap::new(),
            false,
        );
        for a in &mut accesses {
            a.strides = order.iter().map(|&d| a.strides[d]).collect();
        }
        ops.push(op_name(&node.op));
        // Epilogue: the elementwise chain after the reduction, over the output shape.
        let chain = self.epilogue_chain(v);
        let root = chain.last().copied().unwrap_or(v);
        let mut ep_accesses = vec![];
        let mut ep_prog = vec![];
        if chain.is_empty() {
            ep_prog.push(Scalar::Reduced);
        } else {
            for &c in &chain[..chain.len() - 1] {
                self.inline[c] = true;
            }
            let mut given = HashMap::new();
            given.insert(v, Scalar::Reduced);
            let mut memo = HashMap::new();
            // Epilogue loads index the output ([kept dims]) space; values of the node's own
            // shape (with size-1 reduced dims) map onto it by dropping those dims.
            let full = node.shape.clone();
            self.program(
                root,
                &full,
                &mut inputs,
                &mut ep_accesses,
                &mut ep_prog,
                &mut ops,
                &mut memo,
                &given,
                true,
            );
            for a in &mut ep_accesses {
                a.strides = kept.iter().map(|&d| a.strides[d]).collect();
            }
        }
        let out = self.new_buf(self.g.nodes[root].shape.clone(), BufKind::Temp);
        self.buf_of.insert(root, out);
        self.inline[root] = false;
        self.out.kernels.push(FusedKernel {
            body: KernelBody::Loop(LoopKernel {
                shape: space,
                num_inputs: inputs.len(),
                accesses,
                program: prog,
                reduction: Some(Reduction {
                    op: *op,
                    axes: axes.len(),
                    epilogue: ep_prog,
                    epilogue_accesses: ep_accesses,
                    more: vec![],
                }),
                window: None,
            }),
            inputs,
            output: out,
            more_outputs: vec![],
            ops,
            origin: node.origin.clone(),
        });
    }

    fn pool(&mut self, v: ValueId) {
        let node = self.g.nodes[v].clone();
        let Op::Pool {
            op,
            kernel,
            stride,
            padding,
            dilation,
            ..
        } = &node.op
        else {
            unreachable!()
        };
        let x = self.buf(node.inputs[0]);
        let xs = self.g.nodes[node.inputs[0]].shape.clone();
        let r = xs.len();
        let window = Window {
            max: matches!(op, PoolOp::Max),
            count_include_pad: matches!(
                op,
                PoolOp::Avg {
                    count_include_pad: true
                }
            ),
            in_hw: [xs[r - 2], xs[r - 1]],
            kernel: *kernel,
            stride: *stride,
            padding: *padding,
            dilation: *dilation,
        };
        if window.max && r == 4 {
            // Max pooling runs on the host: a vectorized sweep of each tap across a row of
            // windows is several times faster than the generated window loop.
            return self.host(v, HostOp::MaxPool(window));
        }
        let out = self.new_buf(node.shape.clone(), BufKind::Temp);
        self.buf_of.insert(v, out);
        self.out.kernels.push(FusedKernel {
            body: KernelBody::Loop(LoopKernel {
                shape: node.shape.clone(),
                num_inputs: 1,
                accesses: vec![Access {
                    input: 0,
                    strides: contiguous_strides(&xs),
                    offset: 0,
                }],
                program: vec![Scalar::Load(0)],
                reduction: None,
                window: Some(window),
            }),
            inputs: vec![x],
            output: out,
            more_outputs: vec![],
            ops: vec![op_name(&node.op)],
            origin: node.origin.clone(),
        });
    }
}
