//! Sibling reductions: one pass over the data for several reductions of the same space.
//!
//! In: the fused graph's kernels in execution order. Out: the same computation with each
//! reduction kernel that can run earlier, beside an earlier reduction of the same iteration
//! space that reads some of the same buffers, merged into it as a further result
//! ([`Reduction::more`]): batchnorm's backward `Σdy` and `Σdy·(x - mean)` become one pass over
//! `dy` instead of two. A later reduction moves up only if every buffer its accumulation reads
//! already exists at the earlier kernel; an epilogue that reads a value computed in between
//! (batchnorm's `-Σdy` feeding the second sum's epilogue) is split off into a small
//! elementwise kernel left at the later reduction's place.

use super::kernel::{Access, LoopKernel, MoreResult, Scalar};
use super::{BufId, BufKind, Buffer, FusedGraph, FusedKernel, KernelBody};

/// Merges sibling reductions (see the module documentation).
pub fn merge_sibling_reductions(f: &mut FusedGraph) {
    let mut made = producers(f);
    let mut j = 0;
    while j < f.kernels.len() {
        if let Some(i) = partner(f, &made, j) {
            let mut later = f.kernels[j].clone();
            // An epilogue reading values made after kernel `i` stays where it was.
            let tail = if epilogue_ready(f, &made, &later, i) {
                None
            } else {
                Some(split_epilogue(f, &mut later))
            };
            absorb(&mut f.kernels[i], later);
            match tail {
                Some(t) => f.kernels[j] = t,
                None => {
                    f.kernels.remove(j);
                    made = producers(f);
                    continue;
                }
            }
            made = producers(f);
        }
        j += 1;
    }
}

/// The loop kernel of a plain reduction (no pooling window).
fn reduction(k: &FusedKernel) -> Option<&LoopKernel> {
    match &k.body {
        KernelBody::Loop(l) if l.reduction.is_some() && l.window.is_none() => Some(l),
        _ => None,
    }
}

/// The kernel that writes each buffer, if any (by buffer).
fn producers(f: &FusedGraph) -> Vec<Option<usize>> {
    let mut made = vec![None; f.buffers.len()];
    for (i, k) in f.kernels.iter().enumerate() {
        for &b in std::iter::once(&k.output).chain(&k.more_outputs) {
            made[b] = Some(i);
        }
    }
    made
}

/// Whether buffer `b` (a view: its source) holds its value before kernel `i` runs.
fn ready_at(f: &FusedGraph, made: &[Option<usize>], b: BufId, i: usize) -> bool {
    let mut root = b;
    while let BufKind::View(src) = f.buffers[root].kind {
        root = src;
    }
    made[root].is_none_or(|p| p < i)
}

/// Input buffers read by a loop kernel's main program (not its epilogues).
fn prologue_buffers(k: &FusedKernel, l: &LoopKernel) -> Vec<BufId> {
    l.accesses.iter().map(|a| k.inputs[a.input]).collect()
}

/// The earliest reduction kernel before `j` that kernel `j` (a reduction) can join: the same
/// space, reduced axes and operation, at least one buffer in common, and everything `j`'s
/// accumulation reads ready by then.
fn partner(f: &FusedGraph, made: &[Option<usize>], j: usize) -> Option<usize> {
    let kj = &f.kernels[j];
    let lj = reduction(kj)?;
    let rj = lj.reduction.as_ref()?;
    let reads = prologue_buffers(kj, lj);
    (0..j).find(|&i| {
        let ki = &f.kernels[i];
        let Some(li) = reduction(ki) else {
            return false;
        };
        let ri = li.reduction.as_ref().expect("a reduction");
        li.shape == lj.shape
            && ri.axes == rj.axes
            && ri.op == rj.op
            && f.buffers[ki.output].shape == f.buffers[kj.output].shape
            && prologue_buffers(ki, li).iter().any(|b| reads.contains(b))
            && reads.iter().all(|&b| ready_at(f, made, b, i))
    })
}

/// Whether every buffer kernel `k`'s epilogues read is ready at kernel `i`.
fn epilogue_ready(f: &FusedGraph, made: &[Option<usize>], k: &FusedKernel, i: usize) -> bool {
    let l = reduction(k).expect("a reduction");
    let r = l.reduction.as_ref().expect("a reduction");
    r.epilogue_accesses
        .iter()
        .all(|a| ready_at(f, made, k.inputs[a.input], i))
}

/// Turns reduction `k` (with no further results of its own) into one that stores its raw
/// reduced value into a new buffer, and returns the elementwise kernel that applies the old
/// epilogue to that buffer and writes `k`'s old output.
fn split_epilogue(f: &mut FusedGraph, k: &mut FusedKernel) -> FusedKernel {
    let KernelBody::Loop(l) = &mut k.body else {
        unreachable!("a reduction")
    };
    let r = l.reduction.as_mut().expect("a reduction");
    debug_assert!(r.more.is_empty());
    let lead = l.shape.len() - r.axes;
    let space = l.shape[..lead].to_vec();
    let raw = f.buffers.len();
    f.buffers.push(Buffer {
        shape: f.buffers[k.output].shape.clone(),
        kind: BufKind::Temp,
    });
    // The epilogue's loads become the new kernel's accesses, the reduced value a load of the
    // raw buffer (dense over the output space).
    let mut inputs = Vec::new();
    let mut accesses: Vec<Access> = r
        .epilogue_accesses
        .iter()
        .map(|a| {
            let b = k.inputs[a.input];
            let input = inputs.iter().position(|&x| x == b).unwrap_or_else(|| {
                inputs.push(b);
                inputs.len() - 1
            });
            Access { input, ..a.clone() }
        })
        .collect();
    inputs.push(raw);
    let mut strides = vec![0isize; space.len()];
    let mut step = 1isize;
    for d in (0..space.len()).rev() {
        strides[d] = step;
        step *= space[d] as isize;
    }
    accesses.push(Access {
        input: inputs.len() - 1,
        strides,
        offset: 0,
    });
    let raw_load = accesses.len() - 1;
    let program: Vec<Scalar> = std::mem::take(&mut r.epilogue)
        .into_iter()
        .map(|s| match s {
            Scalar::Reduced => Scalar::Load(raw_load),
            s => s,
        })
        .collect();
    r.epilogue_accesses.clear();
    // The ops after the reduction itself are the epilogue's.
    let cut = k
        .ops
        .iter()
        .position(|o| o.starts_with("reduce_"))
        .map_or(k.ops.len(), |p| p + 1);
    let ops = k.ops.split_off(cut);
    let tail = FusedKernel {
        body: KernelBody::Loop(LoopKernel {
            shape: space,
            num_inputs: inputs.len(),
            accesses,
            program,
            reduction: None,
            window: None,
        }),
        inputs,
        output: k.output,
        more_outputs: vec![],
        ops,
        origin: k.origin.clone(),
    };
    k.output = raw;
    tail
}

/// Appends `src` to `dst` (steps remapped: loads through `acc`, operands through the steps
/// already appended), reusing an identical existing step instead of adding it, except for
/// `keep` (a step that must be a new last step). Returns where each step of `src` went.
fn append(dst: &mut Vec<Scalar>, src: &[Scalar], acc: &[usize], keep: Option<usize>) -> Vec<usize> {
    let mut at = Vec::with_capacity(src.len());
    for (i, s) in src.iter().enumerate() {
        let s = match *s {
            Scalar::Load(a) => Scalar::Load(acc[a]),
            Scalar::Unary(u, x) => Scalar::Unary(u, at[x]),
            Scalar::Binary(b, x, y) => Scalar::Binary(b, at[x], at[y]),
            Scalar::Select(c, x, y) => Scalar::Select(at[c], at[x], at[y]),
            s @ (Scalar::Const(_) | Scalar::Reduced) => s,
        };
        let same = |t: &Scalar| match (t, &s) {
            // Constants by bits (so that NaN and -0.0 are themselves).
            (Scalar::Const(a), Scalar::Const(b)) => a.to_bits() == b.to_bits(),
            _ => *t == s,
        };
        match dst.iter().position(same) {
            Some(p) if keep != Some(i) => at.push(p),
            _ => {
                dst.push(s);
                at.push(dst.len() - 1);
            }
        }
    }
    at
}

/// Index of `a` (with its input renumbered to `input`) in `list`, appended if new.
fn access_index(list: &mut Vec<Access>, a: &Access, input: usize) -> usize {
    let a = Access { input, ..a.clone() };
    list.iter().position(|x| *x == a).unwrap_or_else(|| {
        list.push(a);
        list.len() - 1
    })
}

/// Makes kernel `later`'s results further results of reduction kernel `k`.
fn absorb(k: &mut FusedKernel, later: FusedKernel) {
    let KernelBody::Loop(lj) = later.body else {
        unreachable!("a reduction")
    };
    let rj = lj.reduction.expect("a reduction");
    let KernelBody::Loop(li) = &mut k.body else {
        unreachable!("a reduction")
    };
    let input_of = |b: BufId, inputs: &mut Vec<BufId>| {
        inputs.iter().position(|&x| x == b).unwrap_or_else(|| {
            inputs.push(b);
            inputs.len() - 1
        })
    };
    let mut acc_map = Vec::new();
    for a in &lj.accesses {
        let input = input_of(later.inputs[a.input], &mut k.inputs);
        acc_map.push(access_index(&mut li.accesses, a, input));
    }
    let ri = li.reduction.as_mut().expect("a reduction");
    let mut epi_map = Vec::new();
    for a in &rj.epilogue_accesses {
        let input = input_of(later.inputs[a.input], &mut k.inputs);
        epi_map.push(access_index(&mut ri.epilogue_accesses, a, input));
    }
    li.num_inputs = k.inputs.len();
    // The later kernel's steps first (sharing loads and arithmetic with the earlier ones'),
    // then this kernel's own again, its result kept as the program's last step.
    let mut program = Vec::new();
    let at_j = append(&mut program, &lj.program, &acc_map, None);
    let own: Vec<usize> = (0..li.accesses.len()).collect();
    let last = li.program.len() - 1;
    let at_i = append(&mut program, &li.program, &own, Some(last));
    li.program = program;
    for m in &mut ri.more {
        m.step = at_i[m.step];
    }
    let epilogue = |e: &[Scalar]| -> Vec<Scalar> {
        e.iter()
            .map(|s| match *s {
                Scalar::Load(a) => Scalar::Load(epi_map[a]),
                s => s,
            })
            .collect()
    };
    ri.more.push(MoreResult {
        step: at_j[lj.program.len() - 1],
        epilogue: epilogue(&rj.epilogue),
    });
    for m in &rj.more {
        ri.more.push(MoreResult {
            step: at_j[m.step],
            epilogue: epilogue(&m.epilogue),
        });
    }
    k.more_outputs.push(later.output);
    k.more_outputs.extend(later.more_outputs);
    k.ops.extend(later.ops);
    if k.origin != later.origin {
        k.origin = format!("{}, {}", k.origin, later.origin);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use crate::graph::{BinaryOp, Graph, Op, ReduceOp, UnaryOp};
    use crate::runtime::Executable;

    /// Sums over every axis but 1 (batchnorm's statistics).
    fn sum(g: &mut Graph, x: usize) -> usize {
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![0, 2, 3],
        };
        g.add(op, vec![x], "s")
    }

    /// Batchnorm's backward statistics (`a = Σdy`, `b = Σdy·(x - m)·k - a·t`: the second's
    /// epilogue reads `-a`, made between the two), and a third sum that depends on `a` in its
    /// accumulation (`Σ(dy - a)`), which must stay a pass of its own.
    fn graph(shape: &[usize]) -> Graph {
        let mut g = Graph::default();
        let c = shape[1];
        let input = |g: &mut Graph, name: &str, shape: Vec<usize>| {
            let v = g.push(Op::Input { name: name.into() }, vec![], shape, name);
            g.inputs.push((name.into(), v));
            v
        };
        let dy = input(&mut g, "dy", shape.to_vec());
        let x = input(&mut g, "x", shape.to_vec());
        let m = input(&mut g, "m", vec![1, c, 1, 1]);
        let k = input(&mut g, "k", vec![1, c, 1, 1]);
        let t = input(&mut g, "t", vec![1, c, 1, 1]);
        let a = sum(&mut g, dy);
        let na = g.add(Op::Unary(UnaryOp::Neg), vec![a], "s");
        let at = g.add(Op::Binary(BinaryOp::Mul), vec![na, t], "s");
        let d = g.add(Op::Binary(BinaryOp::Sub), vec![x, m], "s");
        let p = g.add(Op::Binary(BinaryOp::Mul), vec![dy, d], "s");
        let b = sum(&mut g, p);
        let bk = g.add(Op::Binary(BinaryOp::Mul), vec![b, k], "s");
        let b = g.add(Op::Binary(BinaryOp::Add), vec![bk, at], "s");
        let e = g.add(Op::Binary(BinaryOp::Sub), vec![dy, a], "s");
        let e = sum(&mut g, e);
        // -a used twice: stored by a kernel of its own between the two sums.
        g.outputs = vec![
            ("a".into(), a),
            ("na".into(), na),
            ("b".into(), b),
            ("e".into(), e),
        ];
        g
    }

    #[test]
    fn sibling_sums_share_one_pass_and_match_the_reference() {
        let shape = [3, 5, 7, 9];
        let g = graph(&shape);
        let fused = crate::fuse::fuse(&g);
        let text = crate::fuse::fused_text(&fused);
        // One pass for a and b (two outputs); -a; b's epilogue, which reads -a, as its own
        // kernel after it; the dependent sum as a reduction of its own.
        let kernels: Vec<&str> = text.lines().filter(|l| l.starts_with('k')).collect();
        assert_eq!(kernels.len(), 4, "{text}");
        assert!(
            kernels[0].starts_with("k0 reduce reduce_sum+sub+mul+reduce_sum(")
                && kernels[0].contains("-> b5 [1, 5, 1, 1], b"),
            "{text}"
        );
        assert!(kernels[1].starts_with("k1 elementwise neg("), "{text}");
        assert!(
            kernels[2].starts_with("k2 elementwise mul+mul+add("),
            "{text}"
        );
        assert!(
            kernels[3].starts_with("k3 reduce sub+reduce_sum("),
            "{text}"
        );
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = |shape: &[usize]| {
            ArrayD::from_shape_fn(IxDyn(shape), |_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
        };
        let c = [1, shape[1], 1, 1];
        let inputs = [
            ("dy", random(&shape)),
            ("x", random(&shape)),
            ("m", random(&c)),
            ("k", random(&c)),
            ("t", random(&c)),
        ];
        let want = crate::reference::run::<f64>(
            &g,
            &[],
            &inputs
                .iter()
                .map(|(n, a)| (*n, a.mapv(f64::from)))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let jit = crate::model::jit().unwrap();
        let mut exe = Executable::new(fused, &[], jit, 2).unwrap();
        let refs: Vec<(&str, &ArrayD<f32>)> = inputs.iter().map(|(n, a)| (*n, a)).collect();
        let got = exe.run(&refs).unwrap();
        for ((name, got), want) in got.iter().zip(&want) {
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    (f64::from(*g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{name}: {g} vs {w}"
                );
            }
        }
    }
}
