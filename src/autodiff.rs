//! Reverse-mode automatic differentiation over the primitive IR.
//!
//! In: a primitive [`Graph`] (usually a training-mode lowering with a loss attached), the value
//! to differentiate (`loss`), an optional seed for its gradient (default: ones) and the values to
//! differentiate with respect to (parameters, or an input image for style transfer). Out: the
//! same graph with the backward ops appended, and each requested value's gradient (`None` when
//! it does not influence `loss`).
//!
//! The backward pass is built only over the nodes that lie on a path from a requested value to
//! `loss`: frozen parameters, constants and everything before the first trainable layer get no
//! gradient ops at all. Gradients of a value with several consumers are summed in consumer
//! order (so the result is deterministic).
//!
//! Every primitive's gradient rule (its vector-Jacobian product) is in [`Backward::rule`], one
//! arm per op: the table. Each rule is checked against central finite differences in f64 on the
//! reference interpreter (`tests/autodiff.rs`). Ties follow PyTorch: `max`/`min` of equal
//! values split the gradient evenly, a max reduction shares it among all maxima, max pooling
//! sends it to the first largest tap.

use crate::graph::{BinaryOp, Graph, Op, ReduceOp, UnaryOp, ValueId};

/// Appends the backward pass of `loss` to `g`. `seed` is the gradient flowing into `loss`
/// (same shape); `None` means ones (the gradient of `loss` itself). Returns, for each value of
/// `wrt`, its gradient value (same shape), or `None` when `loss` does not depend on it.
///
/// Fails only for ops that have no gradient rule (the gradient primitives themselves: netc
/// computes first derivatives).
pub fn backward(
    g: &mut Graph,
    loss: ValueId,
    seed: Option<ValueId>,
    wrt: &[ValueId],
) -> Result<Vec<Option<ValueId>>, String> {
    let n = loss + 1;
    // Values that depend on a requested value...
    let mut from_wrt = vec![false; n];
    for &w in wrt {
        if w < n {
            from_wrt[w] = true;
        }
    }
    for i in 0..n {
        // A detached value carries no gradient back, so nothing before it needs one from
        // this path.
        let detached = matches!(g.nodes[i].op, Op::Unary(UnaryOp::Detach));
        if !from_wrt[i] && !detached && g.nodes[i].inputs.iter().any(|&j| from_wrt[j]) {
            from_wrt[i] = true;
        }
    }
    // ...and that the loss depends on.
    let mut to_loss = vec![false; n];
    to_loss[loss] = true;
    for i in (0..n).rev() {
        if to_loss[i] {
            for &j in &g.nodes[i].inputs {
                to_loss[j] = true;
            }
        }
    }
    let needed: Vec<bool> = (0..n).map(|i| from_wrt[i] && to_loss[i]).collect();

    let mut grads: Vec<Option<ValueId>> = vec![None; n];
    if needed[loss] {
        let s = match seed {
            Some(s) => s,
            None => {
                let one = g.add(Op::Scalar { value: 1.0 }, vec![], "grad");
                let shape = g.shape(loss).to_vec();
                g.push(Op::Expand, vec![one], shape, "grad")
            }
        };
        grads[loss] = Some(s);
    }
    for i in (0..n).rev() {
        let Some(gy) = grads[i] else { continue };
        if !needed[i] {
            continue;
        }
        let node = g.nodes[i].clone();
        let wanted: Vec<bool> = node.inputs.iter().map(|&j| needed[j]).collect();
        if !wanted.iter().any(|&w| w) {
            continue;
        }
        let mut b = Backward {
            g,
            origin: format!("{}'", node.origin),
        };
        let contributions = b.rule(i, gy, &wanted)?;
        for (k, c) in contributions.into_iter().enumerate() {
            let (Some(c), true) = (c, wanted[k]) else {
                continue;
            };
            let j = node.inputs[k];
            debug_assert_eq!(
                b.g.shape(c),
                b.g.shape(j),
                "gradient shape of {:?}",
                node.op
            );
            grads[j] = Some(match grads[j] {
                None => c,
                Some(prev) => b.bin(BinaryOp::Add, prev, c),
            });
        }
    }
    Ok(wrt
        .iter()
        .map(|&w| if w < n { grads[w] } else { None })
        .collect())
}

/// Builds backward ops into the graph.
struct Backward<'a> {
    g: &'a mut Graph,
    origin: String,
}

impl Backward<'_> {
    fn scalar(&mut self, value: f32) -> ValueId {
        self.g.add(Op::Scalar { value }, vec![], &self.origin)
    }
    fn un(&mut self, op: UnaryOp, a: ValueId) -> ValueId {
        self.g.add(Op::Unary(op), vec![a], &self.origin)
    }
    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        self.g.add(Op::Binary(op), vec![a, b], &self.origin)
    }
    fn mul_scalar(&mut self, a: ValueId, v: f32) -> ValueId {
        let s = self.scalar(v);
        self.bin(BinaryOp::Mul, a, s)
    }
    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.g.shape(v).to_vec()
    }
    fn given(&mut self, op: Op, inputs: Vec<ValueId>, shape: Vec<usize>) -> ValueId {
        self.g.push(op, inputs, shape, &self.origin)
    }
    fn expand(&mut self, v: ValueId, shape: &[usize]) -> ValueId {
        if self.g.shape(v) == shape {
            v
        } else {
            self.given(Op::Expand, vec![v], shape.to_vec())
        }
    }
    fn reshape(&mut self, v: ValueId, shape: &[usize]) -> ValueId {
        if self.g.shape(v) == shape {
            v
        } else {
            self.given(Op::Reshape, vec![v], shape.to_vec())
        }
    }

    /// The gradient of a broadcast: sums `gy` over the dimensions that broadcasting stretched,
    /// so that it gets the operand's shape `target`.
    fn unbroadcast(&mut self, gy: ValueId, target: &[usize]) -> ValueId {
        let shape = self.shape(gy);
        if shape == target {
            return gy;
        }
        let lead = shape.len() - target.len();
        let axes: Vec<usize> = (0..shape.len())
            .filter(|&i| i < lead || (target[i - lead] == 1 && shape[i] != 1))
            .collect();
        let summed = if axes.is_empty() {
            gy
        } else {
            self.g.add(
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes,
                },
                vec![gy],
                &self.origin,
            )
        };
        self.reshape(summed, target)
    }

    /// The vector-Jacobian product of node `i` for upstream gradient `gy`: one contribution per
    /// input (`None` for inputs that get no gradient). `wanted[k]` says whether input `k` needs
    /// one; rules may skip work for the others.
    fn rule(
        &mut self,
        i: ValueId,
        gy: ValueId,
        wanted: &[bool],
    ) -> Result<Vec<Option<ValueId>>, String> {
        let node = self.g.nodes[i].clone();
        let x = |k: usize| node.inputs[k];
        let y = i;
        let one = |b: &mut Self| b.scalar(1.0);
        Ok(match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::Scalar { .. } | Op::Tensor { .. } => vec![],
            // A mask is a constant: its input only gives the shape.
            Op::RandomMask { .. } => vec![None],
            Op::Unary(u) => {
                let d = match u {
                    UnaryOp::Detach => return Ok(vec![None]),
                    UnaryOp::Neg => self.un(UnaryOp::Neg, gy),
                    UnaryOp::Relu => {
                        // From the output, as PyTorch does for an in-place ReLU: the input
                        // need not be kept, so it can be computed inside the ReLU's kernel (a
                        // batchnorm's affine step, say). PyTorch's `threshold_backward`,
                        // `y <= 0 ? 0 : dy`, is `y != 0 ? dy : 0` on an output (never
                        // negative): a NaN output passes its gradient, a zero one gives 0.
                        let z = self.scalar(0.0);
                        self.g.add(Op::Select, vec![y, gy, z], &self.origin)
                    }
                    UnaryOp::Exp => self.bin(BinaryOp::Mul, gy, y),
                    UnaryOp::Log => self.bin(BinaryOp::Div, gy, x(0)),
                    UnaryOp::Sqrt => {
                        // d sqrt(x) = 1 / (2 sqrt(x))
                        let q = self.bin(BinaryOp::Div, gy, y);
                        self.mul_scalar(q, 0.5)
                    }
                    UnaryOp::Rsqrt => {
                        // d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
                        let y2 = self.bin(BinaryOp::Mul, y, y);
                        let y3 = self.bin(BinaryOp::Mul, y2, y);
                        let t = self.bin(BinaryOp::Mul, gy, y3);
                        self.mul_scalar(t, -0.5)
                    }
                    UnaryOp::Recip => {
                        let y2 = self.bin(BinaryOp::Mul, y, y);
                        let t = self.bin(BinaryOp::Mul, gy, y2);
                        self.un(UnaryOp::Neg, t)
                    }
                    UnaryOp::Tanh => {
                        let y2 = self.bin(BinaryOp::Mul, y, y);
                        let o = one(self);
                        let d = self.bin(BinaryOp::Sub, o, y2);
                        self.bin(BinaryOp::Mul, gy, d)
                    }
                    UnaryOp::Sigmoid => {
                        let o = one(self);
                        let c = self.bin(BinaryOp::Sub, o, y);
                        let d = self.bin(BinaryOp::Mul, y, c);
                        self.bin(BinaryOp::Mul, gy, d)
                    }
                    UnaryOp::Abs => {
                        let z = self.scalar(0.0);
                        let pos = self.bin(BinaryOp::Greater, x(0), z);
                        let neg = self.bin(BinaryOp::Greater, z, x(0));
                        let sign = self.bin(BinaryOp::Sub, pos, neg);
                        self.bin(BinaryOp::Mul, gy, sign)
                    }
                };
                vec![Some(d)]
            }
            Op::Binary(op) => {
                let (a, b) = (x(0), x(1));
                let (sa, sb) = (self.shape(a), self.shape(b));
                let (da, db) = match op {
                    BinaryOp::Add => (Some(gy), Some(gy)),
                    BinaryOp::Sub => (Some(gy), wanted[1].then(|| self.un(UnaryOp::Neg, gy))),
                    BinaryOp::Mul => (
                        wanted[0].then(|| self.bin(BinaryOp::Mul, gy, b)),
                        wanted[1].then(|| self.bin(BinaryOp::Mul, gy, a)),
                    ),
                    BinaryOp::Div => {
                        let q = self.bin(BinaryOp::Div, gy, b);
                        let db = wanted[1].then(|| {
                            // d(a/b)/db = -a/b² = -y/b
                            let t = self.bin(BinaryOp::Mul, q, y);
                            self.un(UnaryOp::Neg, t)
                        });
                        (Some(q), db)
                    }
                    BinaryOp::Max | BinaryOp::Min => {
                        // PyTorch: the larger (smaller) operand gets the gradient, ties split it.
                        let (hi, lo) = if *op == BinaryOp::Max { (a, b) } else { (b, a) };
                        let a_wins = self.bin(BinaryOp::Greater, hi, lo);
                        let b_wins = self.bin(BinaryOp::Greater, lo, hi);
                        let o = one(self);
                        let share = |w: ValueId, l: ValueId, b: &mut Self| {
                            let t = b.bin(BinaryOp::Sub, w, l);
                            let t = b.bin(BinaryOp::Add, o, t);
                            let t = b.mul_scalar(t, 0.5);
                            b.bin(BinaryOp::Mul, gy, t)
                        };
                        let da = wanted[0].then(|| share(a_wins, b_wins, self));
                        let db = wanted[1].then(|| share(b_wins, a_wins, self));
                        (da, db)
                    }
                    BinaryOp::Pow => {
                        let da = wanted[0].then(|| {
                            let o = one(self);
                            let bm1 = self.bin(BinaryOp::Sub, b, o);
                            let p = self.bin(BinaryOp::Pow, a, bm1);
                            let t = self.bin(BinaryOp::Mul, p, b);
                            self.bin(BinaryOp::Mul, gy, t)
                        });
                        let db = wanted[1].then(|| {
                            let l = self.un(UnaryOp::Log, a);
                            let t = self.bin(BinaryOp::Mul, y, l);
                            self.bin(BinaryOp::Mul, gy, t)
                        });
                        (da, db)
                    }
                    BinaryOp::Greater => (None, None),
                };
                vec![
                    da.filter(|_| wanted[0]).map(|d| self.unbroadcast(d, &sa)),
                    db.filter(|_| wanted[1]).map(|d| self.unbroadcast(d, &sb)),
                ]
            }
            Op::Select => {
                let z = self.scalar(0.0);
                let c = x(0);
                let da = wanted[1].then(|| {
                    let s = self.g.add(Op::Select, vec![c, gy, z], &self.origin);
                    let sh = self.shape(x(1));
                    self.unbroadcast(s, &sh)
                });
                let db = wanted[2].then(|| {
                    let s = self.g.add(Op::Select, vec![c, z, gy], &self.origin);
                    let sh = self.shape(x(2));
                    self.unbroadcast(s, &sh)
                });
                vec![None, da, db]
            }
            Op::Reduce { op, axes } => {
                let xs = self.shape(x(0));
                let d = match op {
                    ReduceOp::Sum => self.expand(gy, &xs),
                    ReduceOp::Mean => {
                        let count: usize = axes.iter().map(|&a| xs[a]).product();
                        let c = self.scalar(count as f32);
                        let q = self.bin(BinaryOp::Div, gy, c);
                        self.expand(q, &xs)
                    }
                    ReduceOp::Max => {
                        // Every maximum shares the gradient equally (PyTorch's amax).
                        let ye = self.expand(y, &xs);
                        let below = self.bin(BinaryOp::Greater, ye, x(0));
                        let o = one(self);
                        let mask = self.bin(BinaryOp::Sub, o, below);
                        let count = self.g.add(
                            Op::Reduce {
                                op: ReduceOp::Sum,
                                axes: axes.clone(),
                            },
                            vec![mask],
                            &self.origin,
                        );
                        let q = self.bin(BinaryOp::Div, gy, count);
                        let qe = self.expand(q, &xs);
                        self.bin(BinaryOp::Mul, qe, mask)
                    }
                };
                vec![Some(d)]
            }
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => {
                let (xs, ws) = (self.shape(x(0)), self.shape(x(1)));
                let dx = wanted[0].then(|| {
                    self.given(
                        Op::Conv2dBackwardData {
                            stride: *stride,
                            padding: *padding,
                            dilation: *dilation,
                            groups: *groups,
                        },
                        vec![gy, x(1)],
                        xs,
                    )
                });
                let dw = wanted[1].then(|| {
                    self.given(
                        Op::Conv2dBackwardWeight {
                            stride: *stride,
                            padding: *padding,
                            dilation: *dilation,
                            groups: *groups,
                        },
                        vec![x(0), gy],
                        ws,
                    )
                });
                vec![dx, dw]
            }
            Op::MatMul { transpose_b } => {
                let (a, b) = (x(0), x(1));
                let r = self.shape(a).len();
                let mut swap: Vec<usize> = (0..r).collect();
                swap.swap(r - 2, r - 1);
                let t = |v: ValueId, s: &mut Self| {
                    s.g.add(Op::Permute { perm: swap.clone() }, vec![v], &s.origin)
                };
                if *transpose_b {
                    // y = a bᵀ: da = gy b, db = gyᵀ a
                    let da = wanted[0].then(|| {
                        self.g
                            .add(Op::MatMul { transpose_b: false }, vec![gy, b], &self.origin)
                    });
                    let db = wanted[1].then(|| {
                        let gt = t(gy, self);
                        self.g
                            .add(Op::MatMul { transpose_b: false }, vec![gt, a], &self.origin)
                    });
                    vec![da, db]
                } else {
                    // y = a b: da = gy bᵀ, db = aᵀ gy
                    let da = wanted[0].then(|| {
                        self.g
                            .add(Op::MatMul { transpose_b: true }, vec![gy, b], &self.origin)
                    });
                    let db = wanted[1].then(|| {
                        let at = t(a, self);
                        self.g.add(
                            Op::MatMul { transpose_b: false },
                            vec![at, gy],
                            &self.origin,
                        )
                    });
                    vec![da, db]
                }
            }
            Op::Pool {
                op,
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => {
                let d = self.g.add(
                    Op::PoolBackward {
                        op: *op,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        dilation: *dilation,
                        ceil_mode: *ceil_mode,
                    },
                    vec![x(0), gy],
                    &self.origin,
                );
                vec![Some(d)]
            }
            Op::AdaptiveAvgPool { .. } => {
                let xs = self.shape(x(0));
                vec![Some(self.given(Op::AdaptiveAvgPoolBackward, vec![gy], xs))]
            }
            Op::Reshape => {
                let xs = self.shape(x(0));
                vec![Some(self.reshape(gy, &xs))]
            }
            Op::Permute { perm } => {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                vec![Some(self.g.add(
                    Op::Permute { perm: inv },
                    vec![gy],
                    &self.origin,
                ))]
            }
            Op::Concat { axis } => {
                let mut start = 0;
                let mut out = Vec::new();
                for (k, &input) in node.inputs.iter().enumerate() {
                    let len = self.g.shape(input)[*axis];
                    out.push(wanted[k].then(|| {
                        self.g.add(
                            Op::Slice {
                                axis: *axis,
                                start,
                                end: start + len,
                            },
                            vec![gy],
                            &self.origin,
                        )
                    }));
                    start += len;
                }
                out
            }
            Op::Slice { axis, start, end } => {
                let n = self.g.shape(x(0))[*axis];
                vec![Some(self.g.add(
                    Op::Pad {
                        axis: *axis,
                        before: *start,
                        after: n - end,
                    },
                    vec![gy],
                    &self.origin,
                ))]
            }
            Op::Expand => {
                let xs = self.shape(x(0));
                vec![Some(self.unbroadcast(gy, &xs))]
            }
            Op::Pad {
                axis,
                before,
                after: _,
            } => {
                let n = self.g.shape(x(0))[*axis];
                vec![Some(self.g.add(
                    Op::Slice {
                        axis: *axis,
                        start: *before,
                        end: before + n,
                    },
                    vec![gy],
                    &self.origin,
                ))]
            }
            op @ (Op::Conv2dBackwardData { .. }
            | Op::Conv2dBackwardWeight { .. }
            | Op::PoolBackward { .. }
            | Op::AdaptiveAvgPoolBackward) => {
                return Err(format!(
                    "cannot differentiate {op:?} (from `{}`): netc computes first derivatives only",
                    node.origin
                ));
            }
        })
    }
}
