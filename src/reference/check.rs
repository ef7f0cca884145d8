//! Shape checking of one op, without panicking: what [`super::run`] verifies before it
//! evaluates anything, so that a malformed graph is an error message rather than a crash.

use crate::graph::{Op, PoolOp, broadcast_shapes, numel};

/// Checks that `op` can take inputs of shapes `ins` and produce `out`: the number of inputs,
/// ranks, matching dimensions, attribute ranges, and that `out` is exactly the shape the op
/// computes (for `Reshape`, the same number of elements; for `Tensor`, as many as its data).
pub fn check_node(op: &Op, ins: &[&[usize]], out: &[usize]) -> Result<(), String> {
    let arity = |n: usize| -> Result<(), String> {
        if ins.len() == n {
            Ok(())
        } else {
            Err(format!("takes {n} inputs, has {}", ins.len()))
        }
    };
    let rank = |i: usize, r: usize, what: &str| -> Result<(), String> {
        if ins[i].len() == r {
            Ok(())
        } else {
            Err(format!("{what} must have rank {r}, has shape {:?}", ins[i]))
        }
    };
    let expected: Vec<usize> = match op {
        Op::Input { .. } | Op::Param { .. } => {
            arity(0)?;
            out.to_vec()
        }
        Op::Scalar { .. } => {
            arity(0)?;
            vec![]
        }
        Op::Tensor { data } => {
            arity(0)?;
            if data.len() != numel(out) {
                return Err(format!(
                    "has {} values for shape {out:?} ({} elements)",
                    data.len(),
                    numel(out)
                ));
            }
            out.to_vec()
        }
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            arity(2)?;
            rank(0, 4, "the conv input")?;
            rank(1, 4, "the conv weight")?;
            let (x, w) = (ins[0], ins[1]);
            if *groups == 0 || stride.contains(&0) || dilation.contains(&0) {
                return Err("groups, stride and dilation must be positive".into());
            }
            if x[1] != w[1] * groups || w[0] % groups != 0 {
                return Err(format!(
                    "input {x:?} and weight {w:?} do not agree with {groups} groups"
                ));
            }
            let oh = window_count(x[2], padding[0] + padding[1], w[2], stride[0], dilation[0])?;
            let ow = window_count(x[3], padding[2] + padding[3], w[3], stride[1], dilation[1])?;
            vec![x[0], w[0], oh, ow]
        }
        Op::MatMul { transpose_b } => {
            arity(2)?;
            let (a, b) = (ins[0], ins[1]);
            let r = a.len();
            if r < 2 || b.len() != r || a[..r - 2] != b[..r - 2] {
                return Err(format!("cannot multiply {a:?} by {b:?}"));
            }
            let (k, n) = if *transpose_b {
                (b[r - 1], b[r - 2])
            } else {
                (b[r - 2], b[r - 1])
            };
            if a[r - 1] != k {
                return Err(format!(
                    "inner dimensions differ: {a:?} by {b:?} (transpose_b: {transpose_b})"
                ));
            }
            let mut o = a[..r - 1].to_vec();
            o.push(n);
            o
        }
        Op::Unary(_) => {
            arity(1)?;
            ins[0].to_vec()
        }
        Op::RandomMask { p, .. } => {
            arity(1)?;
            if !(0.0..=1.0).contains(p) {
                return Err(format!("the drop probability {p} is not in [0, 1]"));
            }
            ins[0].to_vec()
        }
        Op::Binary(_) => {
            arity(2)?;
            broadcast(ins[0], ins[1])?
        }
        Op::Select => {
            arity(3)?;
            let ab = broadcast(ins[1], ins[2])?;
            broadcast(ins[0], &ab)?
        }
        Op::Reduce { axes, .. } => {
            arity(1)?;
            let mut o = ins[0].to_vec();
            for &a in axes {
                if a >= o.len() {
                    return Err(format!("axis {a} is out of range for {:?}", ins[0]));
                }
                o[a] = 1;
            }
            o
        }
        Op::Pool {
            op,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        } => {
            arity(1)?;
            rank(0, 4, "the pooling input")?;
            let x = ins[0];
            if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
                return Err("kernel, stride and dilation must be positive".into());
            }
            if matches!(op, PoolOp::Avg { .. }) && *dilation != [1, 1] {
                return Err("average pooling has no dilation".into());
            }
            window_count(
                x[2],
                padding[0] + padding[1],
                kernel[0],
                stride[0],
                dilation[0],
            )?;
            window_count(
                x[3],
                padding[2] + padding[3],
                kernel[1],
                stride[1],
                dilation[1],
            )?;
            let pool_out = |n, pad, k, s, d| crate::graph::pool_out(n, pad, k, s, d, *ceil_mode);
            vec![
                x[0],
                x[1],
                pool_out(
                    x[2],
                    [padding[0], padding[1]],
                    kernel[0],
                    stride[0],
                    dilation[0],
                ),
                pool_out(
                    x[3],
                    [padding[2], padding[3]],
                    kernel[1],
                    stride[1],
                    dilation[1],
                ),
            ]
        }
        Op::AdaptiveAvgPool { output } => {
            arity(1)?;
            rank(0, 4, "the pooling input")?;
            let x = ins[0];
            if output.contains(&0) || x[2] == 0 || x[3] == 0 {
                return Err(format!("cannot pool {x:?} to {output:?}"));
            }
            vec![x[0], x[1], output[0], output[1]]
        }
        Op::Reshape => {
            arity(1)?;
            if numel(ins[0]) != numel(out) {
                return Err(format!("cannot reshape {:?} to {out:?}", ins[0]));
            }
            out.to_vec()
        }
        Op::Permute { perm } => {
            arity(1)?;
            let r = ins[0].len();
            let mut seen = vec![false; r];
            for &p in perm {
                if p >= r || seen[p] {
                    return Err(format!("{perm:?} is not a permutation of {r} axes"));
                }
                seen[p] = true;
            }
            if perm.len() != r {
                return Err(format!("{perm:?} is not a permutation of {r} axes"));
            }
            perm.iter().map(|&p| ins[0][p]).collect()
        }
        Op::Concat { axis } => {
            if ins.is_empty() {
                return Err("concat needs at least one input".into());
            }
            let first = ins[0];
            if *axis >= first.len() {
                return Err(format!("axis {axis} is out of range for {first:?}"));
            }
            let mut o = first.to_vec();
            o[*axis] = 0;
            for s in ins {
                let same_elsewhere =
                    s.len() == first.len() && (0..s.len()).all(|i| i == *axis || s[i] == first[i]);
                if !same_elsewhere {
                    return Err(format!(
                        "cannot concatenate {first:?} and {s:?} along axis {axis}"
                    ));
                }
                o[*axis] += s[*axis];
            }
            o
        }
        Op::Expand => {
            arity(1)?;
            if broadcast(ins[0], out)? != out {
                return Err(format!("cannot expand {:?} to {out:?}", ins[0]));
            }
            out.to_vec()
        }
        Op::Pad {
            axis,
            before,
            after,
        } => {
            arity(1)?;
            let mut o = ins[0].to_vec();
            if *axis >= o.len() {
                return Err(format!("axis {axis} is out of range for {o:?}"));
            }
            o[*axis] += before + after;
            o
        }
        Op::Conv2dBackwardData { .. } => {
            arity(2)?;
            check_node(&forward_conv(op), &[out, ins[1]], ins[0])
                .map_err(|e| format!("does not invert its convolution: {e}"))?;
            out.to_vec()
        }
        Op::Conv2dBackwardWeight { .. } => {
            arity(2)?;
            check_node(&forward_conv(op), &[ins[0], out], ins[1])
                .map_err(|e| format!("does not match its convolution: {e}"))?;
            out.to_vec()
        }
        Op::PoolBackward {
            op,
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        } => {
            arity(2)?;
            let fwd = Op::Pool {
                op: *op,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                dilation: *dilation,
                ceil_mode: *ceil_mode,
            };
            check_node(&fwd, &[ins[0]], ins[1])
                .map_err(|e| format!("does not match its pooling: {e}"))?;
            ins[0].to_vec()
        }
        Op::AdaptiveAvgPoolBackward => {
            arity(1)?;
            rank(0, 4, "the pooling gradient")?;
            let dy = ins[0];
            if out.len() != 4 || out[..2] != dy[..2] || out[2] == 0 || out[3] == 0 {
                return Err(format!("cannot spread {dy:?} over {out:?}"));
            }
            out.to_vec()
        }
        Op::Slice { axis, start, end } => {
            arity(1)?;
            let x = ins[0];
            if *axis >= x.len() || start >= end || *end > x[*axis] {
                return Err(format!(
                    "cannot slice {start}..{end} of axis {axis} of {x:?}"
                ));
            }
            let mut o = x.to_vec();
            o[*axis] = end - start;
            o
        }
    };
    if expected != out {
        return Err(format!(
            "inputs {ins:?} give shape {expected:?}, the node says {out:?}"
        ));
    }
    Ok(())
}

/// The convolution whose gradient a convolution-gradient op computes.
fn forward_conv(op: &Op) -> Op {
    match *op {
        Op::Conv2dBackwardData {
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
        } => Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        },
        _ => unreachable!("a convolution gradient"),
    }
}

fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    broadcast_shapes(a, b).ok_or_else(|| format!("cannot broadcast {a:?} with {b:?}"))
}

/// The number of positions of a window of `k` taps `d` apart, moved by `s` over `n + pad`
/// cells (floor mode), or an error when the window does not fit at all.
fn window_count(n: usize, pad: usize, k: usize, s: usize, d: usize) -> Result<usize, String> {
    let extent = d * (k - 1) + 1;
    if extent > n + pad {
        return Err(format!(
            "a window of {k} taps (dilation {d}) does not fit in {n} cells plus {pad} padding"
        ));
    }
    Ok((n + pad - extent) / s + 1)
}
