//! Lowering: layer graph → primitive-op graph.
//!
//! In: a checked [`LayerGraph`] and a batch size. Out: a [`Graph`] of primitive ops with
//! concrete shapes (batch dimension first). Every layer becomes a few primitives: batchnorm
//! becomes a per-channel scale and shift computed from its parameters, softmax becomes
//! max/exp/sum/div, LRN a squared average over neighbouring channels, and so on. Inference
//! mode: dropout disappears and batchnorm uses its running statistics. Training mode:
//! batchnorm uses batch statistics and outputs its updated running statistics; dropout
//! multiplies by a seeded random mask and `1/(1-p)`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::graph::{BinaryOp, Graph, Op, PoolOp, ReduceOp, UnaryOp, ValueId};
use crate::layer_graph::{self as lg, LayerGraph};

/// Inference or training semantics for the layers that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batchnorm uses its running statistics; dropout is the identity.
    Inference,
    /// Batchnorm (unless frozen) normalizes with the batch's statistics (biased variance) and
    /// the graph gains one output per running statistic, updated as PyTorch does: with the
    /// layer's momentum and the unbiased variance, named by the buffer's path.
    Training,
}

/// Lowers `g` for a batch of `batch` samples, in inference mode.
pub fn lower(g: &LayerGraph, batch: usize) -> Graph {
    lower_with(g, batch, Mode::Inference)
}

/// Lowers `g` for a batch of `batch` samples in the given mode.
pub fn lower_with(g: &LayerGraph, batch: usize, mode: Mode) -> Graph {
    let mut l = Lowerer {
        lg: g,
        out: Graph::default(),
        params: HashMap::new(),
        values: HashMap::new(),
        batch,
        mode,
        stat_outputs: Vec::new(),
    };
    let joint = joint_batchnorms(g, mode);
    for node in &g.nodes {
        l.lower_node(node.id, &joint);
    }
    // Lowering out of node order (for joint batchnorms) may meet inputs out of order: they
    // stay in the model's order.
    l.out
        .inputs
        .sort_by_key(|(name, _)| g.inputs.iter().position(|i| &i.name == name));
    for (name, n) in &g.outputs {
        let v = l.values[n];
        l.out.outputs.push((name.clone(), v));
    }
    let stats = std::mem::take(&mut l.stat_outputs);
    l.out.outputs.extend(stats);
    l.out
}

struct Lowerer<'a> {
    lg: &'a LayerGraph,
    out: Graph,
    /// Layer-graph parameter index → its leaf node (shared modules use one leaf).
    params: HashMap<usize, ValueId>,
    /// Layer-graph node → the value that holds its output.
    values: HashMap<lg::NodeId, ValueId>,
    batch: usize,
    mode: Mode,
    /// Training mode: updated running statistics, by buffer path.
    stat_outputs: Vec<(String, ValueId)>,
}

/// Training mode: the batchnorm layers of one shared module applied several times (nodes with
/// the same parameters, e.g. `embed(anchor)`, `embed(positive)`, `embed(negative)` of
/// specs/triplet.net), which normalize all their applications with one set of batch
/// statistics, as one batch of all of them, and update their running statistics once per step
/// from it. Without this, each application would normalize with its own batch's statistics:
/// a triplet model's negatives (hard negatives, a batch of its own) would then be shifted and
/// scaled unlike its anchors, which the loss learns to exploit and evaluation (running
/// statistics, one image at a time) cannot (measured in benches/compare/README.md,
/// "Verification"). Grouped: unfrozen batchnorm nodes with the same parameters and shape, none
/// of whose inputs depends on another's output (a module applied to its own output keeps
/// separate statistics). Per grouped node: its group, in node order.
pub(crate) fn joint_batchnorms(
    g: &LayerGraph,
    mode: Mode,
) -> HashMap<lg::NodeId, Arc<Vec<lg::NodeId>>> {
    let mut out = HashMap::new();
    if mode != Mode::Training {
        return out;
    }
    let mut groups: std::collections::BTreeMap<(&[usize], &[usize]), Vec<lg::NodeId>> =
        Default::default();
    for n in &g.nodes {
        if matches!(n.op, lg::Op::BatchNorm { .. }) && !n.frozen && !n.params.is_empty() {
            groups.entry((&n.params, &n.shape)).or_default().push(n.id);
        }
    }
    for members in groups.into_values().filter(|m| m.len() >= 2) {
        // Nodes downstream of a member (nodes come after their inputs).
        let mut tainted = vec![false; g.nodes.len()];
        for n in &g.nodes {
            tainted[n.id] =
                members.contains(&n.id) || n.inputs.iter().any(|&i| i >= n.id || tainted[i]);
        }
        let independent = members
            .iter()
            .all(|&m| g.nodes[m].inputs.len() == 1 && !tainted[g.nodes[m].inputs[0]]);
        if independent {
            let members = Arc::new(members);
            for &m in members.iter() {
                out.insert(m, members.clone());
            }
        }
    }
    out
}

impl Lowerer<'_> {
    /// Lowers node `id` (once), and for a member of a joint batchnorm group the whole group,
    /// after what every member's input needs.
    fn lower_node(&mut self, id: lg::NodeId, joint: &HashMap<lg::NodeId, Arc<Vec<lg::NodeId>>>) {
        if self.values.contains_key(&id) {
            return;
        }
        let Some(group) = joint.get(&id) else {
            let v = self.node(&self.lg.nodes[id]);
            self.values.insert(id, v);
            return;
        };
        // The members' inputs and everything they depend on that is not lowered yet, in node
        // order (so each node's inputs come first). None of them depends on a member.
        let mut need = std::collections::BTreeSet::new();
        let mut stack: Vec<lg::NodeId> =
            group.iter().map(|&m| self.lg.nodes[m].inputs[0]).collect();
        while let Some(n) = stack.pop() {
            if !self.values.contains_key(&n) && need.insert(n) {
                stack.extend(self.lg.nodes[n].inputs.iter().copied());
            }
        }
        for n in need {
            // A member of another group, met here, lowers that group (no cycle: none of
            // these nodes depends on this group); a member of this one cannot be met.
            self.lower_node(n, joint);
        }
        let members: Vec<lg::NodeId> = group
            .iter()
            .copied()
            .filter(|m| !self.values.contains_key(m))
            .collect();
        let node = &self.lg.nodes[members[0]];
        let lg::Op::BatchNorm {
            eps,
            affine,
            momentum,
        } = node.op
        else {
            unreachable!("joint groups hold batchnorm nodes");
        };
        let o = node.path.as_str();
        let xs: Vec<ValueId> = members
            .iter()
            .map(|&m| self.values[&self.lg.nodes[m].inputs[0]])
            .collect();
        let cat = self.out.add(Op::Concat { axis: 0 }, xs, o);
        let mut full = vec![self.batch * members.len()];
        full.extend(&node.shape);
        let y = self.batchnorm_train(node, cat, &full, eps, affine, momentum);
        for (k, &m) in members.iter().enumerate() {
            let (start, end) = (k * self.batch, (k + 1) * self.batch);
            let v = self.out.add(
                Op::Slice {
                    axis: 0,
                    start,
                    end,
                },
                vec![y],
                o,
            );
            self.values.insert(m, v);
        }
    }

    /// `conv2d(x, w)`, with the kernel cropped to the taps that can reach the input: on small
    /// feature maps (ResNet-18's last stage at 32×32 input sees 1×1 maps with 3×3 kernels) the
    /// others only ever multiply padding. The cropped conv reads `w[.., lo..hi, lo..hi]` with the
    /// padding reduced to match, so it has the same output shape and values; in training,
    /// autodiff's gradient of the slice pads the weight gradient back with exact zeros.
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &mut self,
        x: ValueId,
        mut w: ValueId,
        stride: [usize; 2],
        mut padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
        o: &str,
    ) -> ValueId {
        let xs = self.out.shape(x).to_vec();
        let ws = self.out.shape(w).to_vec();
        let (kh, kw) = (ws[2], ws[3]);
        let mut taps = [(0, kh), (0, kw)];
        for a in 0..2 {
            if let Some((lo, hi, before, after)) = crop_taps(
                xs[2 + a],
                ws[2 + a],
                stride[a],
                [padding[2 * a], padding[2 * a + 1]],
                dilation[a],
            ) {
                taps[a] = (lo, hi);
                padding[2 * a] = before;
                padding[2 * a + 1] = after;
            }
        }
        let [(y0, y1), (x0, x1)] = taps;
        if taps != [(0, kh), (0, kw)] {
            if y1 - y0 == 1 || (x0, x1) == (0, kw) {
                // The kept taps are contiguous in the flattened kernel: one slice (and, in
                // training, one pad of the gradient) instead of one per axis.
                let flat = vec![ws[0], ws[1], kh * kw];
                let f = self.out.push(Op::Reshape, vec![w], flat, o);
                let f = self.out.add(
                    Op::Slice {
                        axis: 2,
                        start: y0 * kw + x0,
                        end: (y1 - 1) * kw + x1,
                    },
                    vec![f],
                    o,
                );
                let cropped = vec![ws[0], ws[1], y1 - y0, x1 - x0];
                w = self.out.push(Op::Reshape, vec![f], cropped, o);
            } else {
                for (axis, (lo, hi), k) in [(2, taps[0], kh), (3, taps[1], kw)] {
                    if (lo, hi) != (0, k) {
                        let slice = Op::Slice {
                            axis,
                            start: lo,
                            end: hi,
                        };
                        w = self.out.add(slice, vec![w], o);
                    }
                }
            }
        }
        self.out.add(
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            },
            vec![x, w],
            o,
        )
    }

    fn param(&mut self, index: usize, origin: &str) -> ValueId {
        if let Some(&v) = self.params.get(&index) {
            return v;
        }
        let p = &self.lg.params[index];
        let op = match &p.fixed {
            Some(values) => Op::Tensor {
                data: Arc::from(values.as_slice()),
            },
            None => Op::Param { index },
        };
        let v = self.out.push(op, vec![], p.shape.clone(), origin);
        self.params.insert(index, v);
        v
    }

    fn reshape(&mut self, x: ValueId, shape: Vec<usize>, origin: &str) -> ValueId {
        debug_assert_eq!(
            crate::graph::numel(self.out.shape(x)),
            crate::graph::numel(&shape)
        );
        self.out.push(Op::Reshape, vec![x], shape, origin)
    }

    fn scalar(&mut self, value: f32, origin: &str) -> ValueId {
        self.out.push(Op::Scalar { value }, vec![], vec![], origin)
    }

    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId, origin: &str) -> ValueId {
        self.out.add(Op::Binary(op), vec![a, b], origin)
    }

    fn un(&mut self, op: UnaryOp, a: ValueId, origin: &str) -> ValueId {
        self.out.add(Op::Unary(op), vec![a], origin)
    }

    /// A per-channel vector `[C]` shaped to broadcast over `[N, C, ...]` of rank `rank`.
    fn per_channel(&mut self, v: ValueId, rank: usize, origin: &str) -> ValueId {
        let c = self.out.shape(v)[0];
        let mut shape = vec![1, c];
        shape.resize(rank, 1);
        self.reshape(v, shape, origin)
    }

    /// Batchnorm with batch statistics: `(x - mean) / sqrt(var + eps) * gamma + beta` over
    /// every axis but channels, `var` biased; running statistics updated with `momentum` and
    /// the unbiased variance.
    fn batchnorm_train(
        &mut self,
        node: &lg::Node,
        x: ValueId,
        full: &[usize],
        eps: f64,
        affine: bool,
        momentum: f64,
    ) -> ValueId {
        let o = node.path.as_str();
        let rank = full.len();
        let axes: Vec<usize> = (0..rank).filter(|&a| a != 1).collect();
        let count: usize = axes.iter().map(|&a| full[a]).product();
        // Both statistics in one pass over x: the mean and mean square of `x - s` for a
        // per-channel shift `s`, then `mean = s + m1`, `var = max(m2 - m1², 0)` (any `s` gives
        // the same values; the fuser computes the two sums in one kernel). The shift is each
        // channel's first value (detached), a sample of the channel: `m1` is then about one
        // standard deviation, and the subtraction `m2 - m1²` keeps nearly all the digits of
        // the variance however far the mean is from 0 (the "shifted data" algorithm).
        // (Rows first, so each slice copies little: [N, C, 1, W], [N, C, 1, 1], [1, C, 1, 1].)
        let mut s = x;
        for axis in (2..rank).chain([0]).filter(|&a| full[a] > 1) {
            s = self.out.add(
                Op::Slice {
                    axis,
                    start: 0,
                    end: 1,
                },
                vec![s],
                o,
            );
        }
        let s = self.un(UnaryOp::Detach, s, o);
        let xs = self.bin(BinaryOp::Sub, x, s, o);
        let m1 = self.out.add(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: axes.clone(),
            },
            vec![xs],
            o,
        );
        let sq = self.bin(BinaryOp::Mul, xs, xs, o);
        let m2 = self.out.add(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes,
            },
            vec![sq],
            o,
        );
        let mean = self.bin(BinaryOp::Add, s, m1, o);
        let m1sq = self.bin(BinaryOp::Mul, m1, m1, o);
        let var = self.bin(BinaryOp::Sub, m2, m1sq, o);
        let zero = self.scalar(0.0, o);
        let var = self.bin(BinaryOp::Max, var, zero, o);
        // Centred on the mean detached from autodiff, and the mean's own gradient carried by
        // a per-channel term that is exactly zero forward: `shift - scale · (mean - centre)`.
        // The values are unchanged; the backward pass becomes PyTorch's closed form
        // (`Σdy`, `Σdy·d`, then one elementwise pass), without the pass that would subtract
        // the mean of the centred value's gradient (`∂var/∂mean = mean(-2d) = 0`).
        let centre = self.un(UnaryOp::Detach, mean, o);
        let d = self.bin(BinaryOp::Sub, x, centre, o);
        let delta = self.bin(BinaryOp::Sub, mean, centre, o);
        let e = self.scalar(eps as f32, o);
        let ve = self.bin(BinaryOp::Add, var, e, o);
        let inv = self.un(UnaryOp::Rsqrt, ve, o);
        let p = &node.params;
        // `d · (rsqrt(var + eps) · gamma) + beta`: the per-channel factor is formed first, so
        // the normalized activation is never stored on its own (one pass less over the
        // activation, forward and backward).
        let (y, rm, rv) = if affine {
            let gm = self.param(p[0], o);
            let gm = self.per_channel(gm, rank, o);
            let bt = self.param(p[1], o);
            let bt = self.per_channel(bt, rank, o);
            let scale = self.bin(BinaryOp::Mul, inv, gm, o);
            let y = self.bin(BinaryOp::Mul, d, scale, o);
            let moved = self.bin(BinaryOp::Mul, scale, delta, o);
            let shift = self.bin(BinaryOp::Sub, bt, moved, o);
            (self.bin(BinaryOp::Add, y, shift, o), p[2], p[3])
        } else {
            let y = self.bin(BinaryOp::Mul, d, inv, o);
            let moved = self.bin(BinaryOp::Mul, inv, delta, o);
            (self.bin(BinaryOp::Sub, y, moved, o), p[0], p[1])
        };
        // running = (1 - m) * running + m * batch statistic (variance unbiased)
        let c = full[1];
        let keep = self.scalar((1.0 - momentum) as f32, o);
        let m = self.scalar(momentum as f32, o);
        let unbias = self.scalar((count as f64 / (count.max(2) - 1) as f64) as f32, o);
        // A batchnorm applied more than once in a step (a shared module) updates its running
        // statistics once per application, each from the one before, as PyTorch's in-place
        // update does: one output per buffer, the last update.
        for (buf, stat, scale) in [(rm, mean, None), (rv, var, Some(unbias))] {
            let path = &self.lg.params[buf].path;
            let earlier = self.stat_outputs.iter().position(|(n, _)| n == path);
            let old = match earlier {
                Some(i) => self.stat_outputs[i].1,
                None => self.param(buf, o),
            };
            let mut st = self.reshape(stat, vec![c], o);
            if let Some(u) = scale {
                st = self.bin(BinaryOp::Mul, st, u, o);
            }
            let a = self.bin(BinaryOp::Mul, old, keep, o);
            let b = self.bin(BinaryOp::Mul, st, m, o);
            let new = self.bin(BinaryOp::Add, a, b, o);
            match earlier {
                Some(i) => self.stat_outputs[i].1 = new,
                None => self
                    .stat_outputs
                    .push((self.lg.params[buf].path.clone(), new)),
            }
        }
        y
    }

    fn node(&mut self, node: &lg::Node) -> ValueId {
        let o = node.path.as_str();
        let ins: Vec<ValueId> = node.inputs.iter().map(|i| self.values[i]).collect();
        let x = ins.first().copied().unwrap_or(usize::MAX);
        let mut full = vec![self.batch];
        full.extend(&node.shape);
        match &node.op {
            lg::Op::Input { name } => {
                let v = self
                    .out
                    .push(Op::Input { name: name.clone() }, vec![], full, o);
                self.out.inputs.push((name.clone(), v));
                v
            }
            lg::Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                let w = self.param(node.params[0], o);
                let y = self.conv2d(x, w, *stride, *padding, *dilation, *groups, o);
                if *bias {
                    let b = self.param(node.params[1], o);
                    let b = self.per_channel(b, 4, o);
                    self.bin(BinaryOp::Add, y, b, o)
                } else {
                    y
                }
            }
            lg::Op::MaxPool2d {
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => self.out.add(
                Op::Pool {
                    op: PoolOp::Max,
                    kernel: *kernel,
                    stride: *stride,
                    padding: [padding[0], padding[0], padding[1], padding[1]],
                    dilation: *dilation,
                    ceil_mode: *ceil_mode,
                },
                vec![x],
                o,
            ),
            lg::Op::AvgPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
                count_include_pad,
            } => self.out.add(
                Op::Pool {
                    op: PoolOp::Avg {
                        count_include_pad: *count_include_pad,
                    },
                    kernel: *kernel,
                    stride: *stride,
                    padding: [padding[0], padding[0], padding[1], padding[1]],
                    dilation: [1, 1],
                    ceil_mode: *ceil_mode,
                },
                vec![x],
                o,
            ),
            lg::Op::GlobalAvgPool => self.out.add(
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: vec![2, 3],
                },
                vec![x],
                o,
            ),
            lg::Op::AdaptiveAvgPool2d { output } => {
                self.out
                    .add(Op::AdaptiveAvgPool { output: *output }, vec![x], o)
            }
            lg::Op::Dense { bias, .. } => {
                let w = self.param(node.params[0], o);
                let y = self
                    .out
                    .add(Op::MatMul { transpose_b: true }, vec![x, w], o);
                if *bias {
                    let b = self.param(node.params[1], o);
                    self.bin(BinaryOp::Add, y, b, o)
                } else {
                    y
                }
            }
            lg::Op::Flatten => self.reshape(x, full, o),
            lg::Op::Relu => self.un(UnaryOp::Relu, x, o),
            lg::Op::Sigmoid => self.un(UnaryOp::Sigmoid, x, o),
            lg::Op::Tanh => self.un(UnaryOp::Tanh, x, o),
            lg::Op::Abs => self.un(UnaryOp::Abs, x, o),
            lg::Op::LeakyRelu { slope } => {
                // relu(x) + slope * min(x, 0): right for any slope (max(x, slope x) is not,
                // for slopes above 1).
                let r = self.un(UnaryOp::Relu, x, o);
                let z = self.scalar(0.0, o);
                let neg = self.bin(BinaryOp::Min, x, z, o);
                let s = self.scalar(*slope as f32, o);
                let neg = self.bin(BinaryOp::Mul, neg, s, o);
                self.bin(BinaryOp::Add, r, neg, o)
            }
            lg::Op::Softmax => {
                let m = self.out.add(
                    Op::Reduce {
                        op: ReduceOp::Max,
                        axes: vec![1],
                    },
                    vec![x],
                    o,
                );
                let d = self.bin(BinaryOp::Sub, x, m, o);
                let e = self.un(UnaryOp::Exp, d, o);
                let s = self.out.add(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: vec![1],
                    },
                    vec![e],
                    o,
                );
                self.bin(BinaryOp::Div, e, s, o)
            }
            lg::Op::BatchNorm {
                eps,
                affine,
                momentum,
            } if self.mode == Mode::Training && !node.frozen => {
                self.batchnorm_train(node, x, &full, *eps, *affine, *momentum)
            }
            lg::Op::BatchNorm { eps, affine, .. } => {
                // y = x * scale + shift, scale = gamma / sqrt(var + eps), shift = beta - mean * scale
                let rank = full.len();
                let p = &node.params;
                let (gamma, beta, mean, var) = if *affine {
                    (Some(p[0]), Some(p[1]), p[2], p[3])
                } else {
                    (None, None, p[0], p[1])
                };
                let mean = self.param(mean, o);
                let var = self.param(var, o);
                let e = self.scalar(*eps as f32, o);
                let ve = self.bin(BinaryOp::Add, var, e, o);
                let mut scale = self.un(UnaryOp::Rsqrt, ve, o);
                if let Some(gm) = gamma {
                    let gm = self.param(gm, o);
                    scale = self.bin(BinaryOp::Mul, gm, scale, o);
                }
                let ms = self.bin(BinaryOp::Mul, mean, scale, o);
                let shift = match beta {
                    Some(bt) => {
                        let bt = self.param(bt, o);
                        self.bin(BinaryOp::Sub, bt, ms, o)
                    }
                    None => self.un(UnaryOp::Neg, ms, o),
                };
                let scale = self.per_channel(scale, rank, o);
                let shift = self.per_channel(shift, rank, o);
                let y = self.bin(BinaryOp::Mul, x, scale, o);
                self.bin(BinaryOp::Add, y, shift, o)
            }
            lg::Op::Lrn {
                size,
                alpha,
                beta,
                k,
            } => {
                // PyTorch: x / (k + alpha * avg_{c-size/2 .. c+(size-1)/2}(x^2))^beta, the average
                // over `size` channels with zero padding counted.
                let (n, c, h, w) = (full[0], full[1], full[2], full[3]);
                let sq = self.bin(BinaryOp::Mul, x, x, o);
                let sq = self.reshape(sq, vec![n, 1, c, h * w], o);
                let avg = self.out.add(
                    Op::Pool {
                        op: PoolOp::Avg {
                            count_include_pad: true,
                        },
                        kernel: [*size, 1],
                        stride: [1, 1],
                        padding: [size / 2, (size - 1) / 2, 0, 0],
                        dilation: [1, 1],
                        ceil_mode: false,
                    },
                    vec![sq],
                    o,
                );
                let avg = self.reshape(avg, full.clone(), o);
                let a = self.scalar(*alpha as f32, o);
                let kk = self.scalar(*k as f32, o);
                let b = self.scalar(*beta as f32, o);
                let t = self.bin(BinaryOp::Mul, avg, a, o);
                let t = self.bin(BinaryOp::Add, t, kk, o);
                let t = self.bin(BinaryOp::Pow, t, b, o);
                self.bin(BinaryOp::Div, x, t, o)
            }
            lg::Op::Dropout { p } if self.mode == Mode::Training && !node.frozen && *p > 0.0 => {
                // PyTorch's inverted dropout: keep with probability 1 - p, scale by 1/(1 - p).
                // The mask's seed is fixed per layer; the runtime mixes in the step
                // (`graph::step_seed`), so every step draws a new mask.
                let seed = crate::graph::path_seed(&node.path);
                let mask = self
                    .out
                    .add(Op::RandomMask { p: *p as f32, seed }, vec![x], o);
                let y = self.bin(BinaryOp::Mul, x, mask, o);
                let scale = if *p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
                let k = self.scalar(scale as f32, o);
                self.bin(BinaryOp::Mul, y, k, o)
            }
            lg::Op::Dropout { .. } | lg::Op::Identity => x,
            lg::Op::L2Normalize { eps } => {
                let sq = self.bin(BinaryOp::Mul, x, x, o);
                let s = self.out.add(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: vec![1],
                    },
                    vec![sq],
                    o,
                );
                let norm = self.un(UnaryOp::Sqrt, s, o);
                let e = self.scalar(*eps as f32, o);
                let d = self.bin(BinaryOp::Max, norm, e, o);
                self.bin(BinaryOp::Div, x, d, o)
            }
            lg::Op::Gram => {
                // G = F Fᵀ / (C H W) with F = x reshaped to [N, C, H W].
                let xin = self.out.shape(x).to_vec();
                let f = self.reshape(x, vec![xin[0], xin[1], xin[2] * xin[3]], o);
                let g = self
                    .out
                    .add(Op::MatMul { transpose_b: true }, vec![f, f], o);
                let s = self.scalar(1.0 / (xin[1] * xin[2] * xin[3]) as f32, o);
                self.bin(BinaryOp::Mul, g, s, o)
            }
            lg::Op::Add => self.bin(BinaryOp::Add, ins[0], ins[1], o),
            lg::Op::Sub => self.bin(BinaryOp::Sub, ins[0], ins[1], o),
            lg::Op::Mul => self.bin(BinaryOp::Mul, ins[0], ins[1], o),
            lg::Op::Concat => self.out.add(Op::Concat { axis: 1 }, ins, o),
            lg::Op::TripletLoss { margin } => {
                // PyTorch's pairwise_distance adds eps = 1e-6 to the difference.
                let dist = |l: &mut Self, a: ValueId, b: ValueId| {
                    let d = l.bin(BinaryOp::Sub, a, b, o);
                    let e = l.scalar(1e-6, o);
                    let d = l.bin(BinaryOp::Add, d, e, o);
                    let sq = l.bin(BinaryOp::Mul, d, d, o);
                    let s = l.out.add(
                        Op::Reduce {
                            op: ReduceOp::Sum,
                            axes: vec![1],
                        },
                        vec![sq],
                        o,
                    );
                    l.un(UnaryOp::Sqrt, s, o)
                };
                let dp = dist(self, ins[0], ins[1]);
                let dn = dist(self, ins[0], ins[2]);
                let diff = self.bin(BinaryOp::Sub, dp, dn, o);
                let m = self.scalar(*margin as f32, o);
                let t = self.bin(BinaryOp::Add, diff, m, o);
                let z = self.scalar(0.0, o);
                self.bin(BinaryOp::Max, t, z, o)
            }
        }
    }
}

/// Along one axis of a convolution (input size `n`, `k` taps `d` apart, stride `s`, padding
/// `[before, after]`): the taps `lo..hi` that reach the input for some output position, and
/// the padding that keeps the output size with only those taps, or `None` when every tap is
/// needed or the cropped form would need negative padding.
fn crop_taps(
    n: usize,
    k: usize,
    s: usize,
    [before, after]: [usize; 2],
    d: usize,
) -> Option<(usize, usize, usize, usize)> {
    let span = (n + before + after).checked_sub(d * (k - 1) + 1)?;
    let outs = span / s + 1;
    let reaches = |t: usize| {
        (0..outs).any(|o| {
            let at = (o * s + t * d) as isize - before as isize;
            at >= 0 && at < n as isize
        })
    };
    let lo = (0..k).find(|&t| reaches(t))?;
    let hi = (0..k).rev().find(|&t| reaches(t))? + 1;
    if lo == 0 && hi == k {
        return None;
    }
    let before = before.checked_sub(lo * d)?;
    let after = after.checked_sub((k - hi) * d)?;
    Some((lo, hi, before, after))
}

#[cfg(test)]
mod tests {
    use super::crop_taps;
    use crate::reference::ops::{conv2d, slice, tensor};

    #[test]
    fn crops_only_taps_that_never_reach_the_input() {
        // 3×3, padding 1 on a 1×1 map: only the centre tap sees the input.
        assert_eq!(crop_taps(1, 3, 1, [1, 1], 1), Some((1, 2, 0, 0)));
        // Stride 2 from 2×2 to 1×1: taps 1 and 2.
        assert_eq!(crop_taps(2, 3, 2, [1, 1], 1), Some((1, 3, 0, 1)));
        // Every tap is used somewhere on a 2×2 map at stride 1.
        assert_eq!(crop_taps(2, 3, 1, [1, 1], 1), None);
        assert_eq!(crop_taps(7, 3, 1, [1, 1], 1), None);
        // No padding: nothing to crop.
        assert_eq!(crop_taps(5, 5, 1, [0, 0], 1), None);
        // Dilation 2 on a 1×1 map with padding 2: the centre tap again.
        assert_eq!(crop_taps(1, 3, 1, [2, 2], 2), Some((1, 2, 0, 0)));
    }

    /// The cropped convolution equals the full one, on every small configuration.
    #[test]
    fn cropped_convolution_computes_the_same_values() {
        let mut seed = 7u64;
        let mut rand = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed = crate::reference::ops::splitmix64(seed, 1);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        let mut cropped = 0;
        for n in 1..=4 {
            for k in 1..=5 {
                for s in 1..=3 {
                    for p in 0..=3 {
                        for d in 1..=2 {
                            let Some((lo, hi, before, after)) = crop_taps(n, k, s, [p, p], d)
                            else {
                                continue;
                            };
                            cropped += 1;
                            let xs = [2, 3, n, n + 1];
                            let ws = [4, 3, k, 1];
                            let x = tensor::<f64>(&rand(xs.iter().product()), &xs);
                            let w = tensor::<f64>(&rand(ws.iter().product()), &ws);
                            let full = conv2d(&x, &w, [s, 1], [p, p, 0, 0], [d, 1], 1);
                            let wc = slice(&w, 2, lo, hi);
                            let small = conv2d(&x, &wc, [s, 1], [before, after, 0, 0], [d, 1], 1);
                            assert_eq!(
                                full.shape(),
                                small.shape(),
                                "n={n} k={k} s={s} p={p} d={d}"
                            );
                            for (a, b) in full.iter().zip(small.iter()) {
                                assert!((a - b).abs() < 1e-12, "n={n} k={k} s={s} p={p} d={d}");
                            }
                        }
                    }
                }
            }
        }
        assert!(cropped > 20, "only {cropped} configurations cropped");
    }
}
