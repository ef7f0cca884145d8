//! JIT kernels (`netc::codegen`) against a plain scalar evaluation of the same `LoopKernel`.
//!
//! The scalar evaluator follows the reference interpreter's conventions: every step is applied
//! in f64 through `UnaryOp::apply`/`BinaryOp::apply` and rounded to f32, sums accumulate in f32
//! in index order. Random kernels use a seeded generator (the seed is the proptest input).

use std::cell::RefCell;
use std::sync::Arc;

use netc::codegen::{CompiledKernel, Jit, OptLevel};
use netc::fuse::kernel::{Access, LoopKernel, MoreResult, Reduction, Scalar, Window};
use netc::graph::{BinaryOp, ReduceOp, UnaryOp};
use proptest::prelude::*;

// ---------------------------------------------------------------- a tiny seeded generator

/// This file's seeded values: the project's SplitMix64 (`netc::data::rng::splitmix64`) with
/// the draws these tests need (seeds of past failures stay reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        netc::data::rng::splitmix64(&mut self.0)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }
}

// ---------------------------------------------------------------- the scalar evaluator

/// One f32 rounding, relative.
const U: f64 = 1.2e-7;
/// The documented accuracy of the inline exp/tanh/sigmoid, relative (with margin).
const APPROX: f64 = 6e-7;

/// Evaluates a program like the reference (f64 `apply`, rounded to f32 per step) and returns
/// the value with a bound on how far a correct backend may be from it: propagated through each
/// op from the inputs' bounds (first order, with margin), plus one rounding per step and the
/// documented error of the approximated functions. Where a comparison or `Select` condition is
/// within its error of the threshold, both outcomes are allowed.
fn eval_prog(prog: &[Scalar], load: &dyn Fn(usize) -> f32, reduced: (f32, f64)) -> (f32, f64) {
    let mut v: Vec<(f32, f64)> = Vec::with_capacity(prog.len());
    for s in prog {
        let x = match *s {
            Scalar::Load(a) => (load(a), 0.0),
            Scalar::Const(c) => (c, 0.0),
            Scalar::Reduced => reduced,
            Scalar::Unary(op, i) => {
                let (x, e) = (f64::from(v[i].0), v[i].1);
                let r = op.apply(x);
                let d = match op {
                    UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Detach => e,
                    UnaryOp::Sqrt => e / (2.0 * (x - e).max(0.0).sqrt()) + U * r.abs(),
                    UnaryOp::Rsqrt => e * r.abs() / (2.0 * (x - e)) + 3.0 * U * r.abs(),
                    UnaryOp::Recip => e / (x.abs() - e) / x.abs() + U * r.abs(),
                    UnaryOp::Log => e / (x.abs() - e) + U * r.abs(),
                    UnaryOp::Exp => r.abs() * (e.exp() - 1.0) + APPROX * r.abs(),
                    UnaryOp::Tanh => e + APPROX * r.abs(),
                    UnaryOp::Sigmoid => e / 4.0 + APPROX * r.abs(),
                };
                (
                    r as f32,
                    if d.is_nan() || d < 0.0 {
                        f64::INFINITY
                    } else {
                        d
                    },
                )
            }
            Scalar::Binary(op, i, j) => {
                let (x, ex) = (f64::from(v[i].0), v[i].1);
                let (y, ey) = (f64::from(v[j].0), v[j].1);
                let r = op.apply(x, y);
                let d = match op {
                    BinaryOp::Add | BinaryOp::Sub => ex + ey + U * r.abs(),
                    BinaryOp::Mul => x.abs() * ey + y.abs() * ex + ex * ey + U * r.abs(),
                    BinaryOp::Div => (ex + r.abs() * ey) / (y.abs() - ey) + U * r.abs(),
                    BinaryOp::Max | BinaryOp::Min => ex.max(ey),
                    BinaryOp::Pow => {
                        2.0 * r.abs() * (y.abs() * ex / (x.abs() - ex) + x.ln().abs() * ey)
                            + 2.0 * U * r.abs()
                    }
                    BinaryOp::Greater => {
                        if (x - y).abs() <= ex + ey {
                            1.0
                        } else {
                            0.0
                        }
                    }
                };
                (
                    r as f32,
                    if d.is_nan() || d < 0.0 {
                        f64::INFINITY
                    } else {
                        d
                    },
                )
            }
            Scalar::Select(c, i, j) => {
                let pick = if v[c].0 != 0.0 { v[i] } else { v[j] };
                if f64::from(v[c].0.abs()) <= v[c].1 {
                    let spread = f64::from((v[i].0 - v[j].0).abs());
                    (pick.0, spread + v[i].1.max(v[j].1))
                } else {
                    pick
                }
            }
        };
        v.push(x);
    }
    *v.last().unwrap()
}

/// The reference's max (`BinaryOp::Max`: NaN if either is NaN).
fn max(a: f32, b: f32) -> f32 {
    BinaryOp::Max.apply(f64::from(a), f64::from(b)) as f32
}

/// All multi-indices of `shape`, row-major (one empty index for rank 0).
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &n in shape {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..n).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}

fn read(inputs: &[Vec<f32>], a: &Access, idx: &[usize]) -> f32 {
    let off = a.offset
        + idx
            .iter()
            .zip(&a.strides)
            .map(|(&i, &s)| i as isize * s)
            .sum::<isize>();
    inputs[a.input][off as usize]
}

/// The expected output and, per element, the error bound of [`eval_prog`] (for sums: the
/// terms' bounds plus a rounding bound valid for any summation order).
fn evaluate(k: &LoopKernel, inputs: &[Vec<f32>]) -> (Vec<f32>, Vec<f64>) {
    let r = k.shape.len();
    if let Some(red) = &k.reduction {
        let lead = r - red.axes;
        let count: usize = k.shape[lead..].iter().product();
        let mut out = Vec::new();
        let mut bound = Vec::new();
        for li in indices(&k.shape[..lead]) {
            let mut acc = if red.op == ReduceOp::Max {
                f32::NEG_INFINITY
            } else {
                0.0
            };
            let (mut err, mut abs) = (0.0f64, 0.0f64);
            for ri in indices(&k.shape[lead..]) {
                let idx: Vec<usize> = li.iter().chain(&ri).copied().collect();
                let (v, e) = eval_prog(
                    &k.program,
                    &|a| read(inputs, &k.accesses[a], &idx),
                    (0.0, 0.0),
                );
                abs += f64::from(v.abs());
                acc = match red.op {
                    ReduceOp::Max => {
                        err = err.max(e);
                        max(acc, v)
                    }
                    _ => {
                        err += e;
                        acc + v
                    }
                };
            }
            if red.op != ReduceOp::Max {
                err += 2.0 * count as f64 * U * abs;
            }
            if red.op == ReduceOp::Mean {
                acc /= count as f32;
                err = err / count as f64 + U * f64::from(acc.abs());
            }
            if !red.epilogue.is_empty() {
                (acc, err) = eval_prog(
                    &red.epilogue,
                    &|a| read(inputs, &red.epilogue_accesses[a], &li),
                    (acc, err),
                );
            }
            out.push(acc);
            bound.push(err);
        }
        return (out, bound);
    }
    if let Some(w) = &k.window {
        let (hh, ww) = (w.in_hw[0] as isize, w.in_hw[1] as isize);
        let mut out = Vec::new();
        let mut bound = Vec::new();
        for idx in indices(&k.shape) {
            let (oh, ow) = (idx[r - 2] as isize, idx[r - 1] as isize);
            let hs = oh * w.stride[0] as isize - w.padding[0] as isize;
            let ws = ow * w.stride[1] as isize - w.padding[2] as isize;
            let (kh, kw) = (w.kernel[0] as isize, w.kernel[1] as isize);
            let mut acc = if w.max { f32::NEG_INFINITY } else { 0.0 };
            let mut err = 0.0f64;
            for i in 0..kh {
                for j in 0..kw {
                    let h = hs + i * w.dilation[0] as isize;
                    let x = ws + j * w.dilation[1] as isize;
                    if h < 0 || h >= hh || x < 0 || x >= ww {
                        continue;
                    }
                    let mut cell = idx.clone();
                    cell[r - 2] = h as usize;
                    cell[r - 1] = x as usize;
                    let (v, e) = eval_prog(
                        &k.program,
                        &|a| read(inputs, &k.accesses[a], &cell),
                        (0.0, 0.0),
                    );
                    err = err.max(e);
                    acc = if w.max { max(acc, v) } else { acc + v };
                }
            }
            if !w.max {
                let pool = ((hs + kh).min(hh + w.padding[1] as isize) - hs)
                    * ((ws + kw).min(ww + w.padding[3] as isize) - ws);
                let clipped = ((hs + kh).min(hh) - hs.max(0)) * ((ws + kw).min(ww) - ws.max(0));
                let div = if w.count_include_pad { pool } else { clipped };
                acc /= div as f32;
            }
            out.push(acc);
            bound.push(err);
        }
        return (out, bound);
    }
    indices(&k.shape)
        .iter()
        .map(|idx| {
            eval_prog(
                &k.program,
                &|a| read(inputs, &k.accesses[a], idx),
                (0.0, 0.0),
            )
        })
        .unzip()
}

// ---------------------------------------------------------------- running and comparing

thread_local! {
    static JIT: RefCell<Jit> = RefCell::new(Jit::new().expect("host supported"));
}

fn compile(k: &LoopKernel) -> Arc<CompiledKernel> {
    JIT.with(|j| j.borrow_mut().compile(k))
        .unwrap_or_else(|e| panic!("compile failed: {e}\n{k:#?}"))
}

/// Every output (the main one, then a reduction's further results), concatenated.
fn run(c: &CompiledKernel, inputs: &[Vec<f32>], ranges: &[(usize, usize)]) -> Vec<f32> {
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut outs = vec![vec![f32::NAN; c.output_len]; 1 + c.more_outputs];
    for &(b, e) in ranges {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        c.run_all(&ins, &mut refs, b, e).expect("run");
    }
    outs.concat()
}

/// [`evaluate`] for every output: the main one, then each further result of a reduction
/// (the same kernel with the program cut after the result's step and its epilogue),
/// concatenated.
fn evaluate_all(k: &LoopKernel, inputs: &[Vec<f32>]) -> (Vec<f32>, Vec<f64>) {
    let (mut out, mut bound) = evaluate(k, inputs);
    for m in k.reduction.iter().flat_map(|r| &r.more) {
        let mut one = k.clone();
        one.program.truncate(m.step + 1);
        let r = one.reduction.as_mut().expect("a reduction");
        r.epilogue = m.epilogue.clone();
        r.more.clear();
        let (o, b) = evaluate(&one, inputs);
        out.extend(o);
        bound.extend(b);
    }
    (out, bound)
}

/// Within relative 1e-5, or within the evaluator's error bound; two values below the
/// smallest normal f32 count as equal (subnormals carry no relative precision: `exp` near
/// -103.3 gives 1.4e-45 or 0 depending on the last bit of its polynomial).
fn close(got: f32, want: f32, bound: f64) -> bool {
    if got == want || (got.is_nan() && want.is_nan()) {
        return true;
    }
    if got.abs() < f32::MIN_POSITIVE && want.abs() < f32::MIN_POSITIVE {
        return true;
    }
    let (g, w) = (f64::from(got), f64::from(want));
    (g - w).abs() <= 1e-5 * w.abs() + bound
}

/// Compiles, runs whole and split in two, and compares with the scalar evaluation.
fn check(k: &LoopKernel, inputs: &[Vec<f32>], rng: &mut Rng) -> Result<(), TestCaseError> {
    let c = compile(k);
    let (want, scale) = evaluate_all(k, inputs);
    prop_assert_eq!(c.output_len * (1 + c.more_outputs), want.len());
    let whole = run(&c, inputs, &[(0, c.outer)]);
    for (i, ((&g, &w), &s)) in whole.iter().zip(&want).zip(&scale).enumerate() {
        prop_assert!(
            close(g, w, s),
            "element {} of {}: got {} want {} (bound {})\nkernel {:#?}\nvectorized {}\n{}",
            i,
            want.len(),
            g,
            w,
            s,
            k,
            c.vectorized,
            c.clif
        );
    }
    let mid = rng.range(0, c.outer);
    let split = run(&c, inputs, &[(mid, c.outer), (0, mid), (mid, mid)]);
    prop_assert!(
        whole
            .iter()
            .zip(&split)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "split at {mid} differs"
    );
    Ok(())
}

// ---------------------------------------------------------------- random kernels

/// A random access over `shape` reading a fresh region: broadcast dims (stride 0), a random
/// dim order (mostly the natural one), sometimes a reversed dim, a random offset. Returns the
/// access and the buffer length it needs.
fn random_access(rng: &mut Rng, input: usize, shape: &[usize]) -> (Access, usize) {
    let r = shape.len();
    let mut order: Vec<usize> = (0..r).collect();
    if rng.chance(0.3) {
        for i in (1..r).rev() {
            let j = rng.range(0, i);
            order.swap(i, j);
        }
    }
    let mut strides = vec![0isize; r];
    let mut size = 1usize;
    for &d in order.iter().rev() {
        if rng.chance(0.25) {
            continue; // broadcast
        }
        strides[d] = size as isize;
        size *= shape[d];
    }
    let pad = rng.range(0, 3);
    let mut offset = pad as isize;
    for d in 0..r {
        if strides[d] != 0 && rng.chance(0.1) {
            offset += strides[d] * (shape[d] as isize - 1);
            strides[d] = -strides[d];
        }
    }
    (
        Access {
            input,
            strides,
            offset,
        },
        size + pad,
    )
}

/// Random accesses over `shape` spread over `num_inputs` buffers (sized for all of them).
fn random_accesses(
    rng: &mut Rng,
    n: usize,
    num_inputs: usize,
    shape: &[usize],
    lens: &mut [usize],
) -> Vec<Access> {
    (0..n)
        .map(|_| {
            let input = rng.range(0, num_inputs - 1);
            let (a, len) = random_access(rng, input, shape);
            lens[input] = lens[input].max(len);
            a
        })
        .collect()
}

const UNARY: [UnaryOp; 11] = [
    UnaryOp::Detach,
    UnaryOp::Neg,
    UnaryOp::Relu,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Recip,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Abs,
];
const BINARY: [BinaryOp; 8] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Pow,
    BinaryOp::Greater,
];

struct Prog(Vec<Scalar>);

impl Prog {
    fn push(&mut self, s: Scalar) -> usize {
        self.0.push(s);
        self.0.len() - 1
    }
    fn konst(&mut self, c: f32) -> usize {
        self.push(Scalar::Const(c))
    }
    fn clamp(&mut self, x: usize, c: f32) -> usize {
        let hi = self.konst(c);
        let lo = self.konst(-c);
        let m = self.push(Scalar::Binary(BinaryOp::Min, x, hi));
        self.push(Scalar::Binary(BinaryOp::Max, m, lo))
    }
    /// `|x| + 0.5`: a safe argument for log, sqrt, division, pow.
    fn positive(&mut self, x: usize) -> usize {
        let a = self.push(Scalar::Unary(UnaryOp::Abs, x));
        let h = self.konst(0.5);
        self.push(Scalar::Binary(BinaryOp::Add, a, h))
    }
}

/// A random program over `naccess` loads (plus `Reduced` when `reduced`). With `exact`, only
/// ops that are exact on small dyadic values (so sums of the results are order independent).
fn random_program(rng: &mut Rng, naccess: usize, reduced: bool, exact: bool) -> Vec<Scalar> {
    let mut p = Prog(Vec::new());
    let mut vals: Vec<usize> = Vec::new();
    for a in 0..naccess {
        if rng.chance(0.8) || a == 0 {
            vals.push(p.push(Scalar::Load(a)));
        }
    }
    if reduced {
        vals.push(p.push(Scalar::Reduced));
    }
    if rng.chance(0.3) {
        let c = rng.pick(&[0.0, 1.0, -2.5, 0.125, 3.0]);
        vals.push(p.konst(c));
    }
    let steps = rng.range(1, 7);
    for _ in 0..steps {
        let x = rng.pick(&vals);
        let y = rng.pick(&vals);
        let kind = rng.range(0, 9);
        let v = if kind < 4 {
            let op = if exact {
                rng.pick(&[UnaryOp::Neg, UnaryOp::Relu, UnaryOp::Abs])
            } else {
                rng.pick(&UNARY)
            };
            match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => {
                    let s = p.positive(x);
                    let v = p.push(Scalar::Unary(op, s));
                    p.clamp(v, 100.0)
                }
                UnaryOp::Exp => {
                    let s = p.clamp(x, 20.0);
                    let v = p.push(Scalar::Unary(op, s));
                    p.clamp(v, 100.0)
                }
                _ => p.push(Scalar::Unary(op, x)),
            }
        } else if kind < 8 {
            let op = if exact {
                rng.pick(&[
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Max,
                    BinaryOp::Min,
                    BinaryOp::Greater,
                ])
            } else {
                rng.pick(&BINARY)
            };
            match op {
                BinaryOp::Div => {
                    let d = p.positive(y);
                    p.push(Scalar::Binary(op, x, d))
                }
                BinaryOp::Pow => {
                    let b = p.positive(x);
                    let b = p.clamp(b, 10.0);
                    let e = p.clamp(y, 2.0);
                    let v = p.push(Scalar::Binary(op, b, e));
                    p.clamp(v, 100.0)
                }
                BinaryOp::Mul => {
                    let v = p.push(Scalar::Binary(op, x, y));
                    p.clamp(v, 1000.0)
                }
                _ => p.push(Scalar::Binary(op, x, y)),
            }
        } else {
            let c = rng.pick(&vals);
            p.push(Scalar::Select(c, x, y))
        };
        vals.push(v);
    }
    p.0
}

fn random_shape(rng: &mut Rng, rank: usize) -> Vec<usize> {
    (0..rank)
        .map(|_| {
            if rng.chance(0.15) {
                1
            } else {
                rng.range(1, 13)
            }
        })
        .collect()
}

/// Random inputs; in about a third of the kernels, some NaN, ±inf and -0 among them (which
/// must come out as the reference's: NaN never dropped by a max, a min or a ReLU).
fn random_inputs(rng: &mut Rng, lens: &[usize], exact: bool) -> Vec<Vec<f32>> {
    let special = if rng.chance(0.3) { 0.08 } else { 0.0 };
    lens.iter()
        .map(|&n| {
            (0..n)
                .map(|_| {
                    if rng.chance(special) {
                        rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0])
                    } else if exact {
                        rng.range(0, 64) as f32 / 8.0 - 4.0
                    } else {
                        rng.f32(-3.0, 3.0)
                    }
                })
                .collect()
        })
        .collect()
}

fn random_plain(rng: &mut Rng) -> (LoopKernel, Vec<Vec<f32>>) {
    let rank = rng.range(0, 4);
    let shape = random_shape(rng, rank);
    let num_inputs = rng.range(1, 3);
    let naccess = rng.range(1, 4);
    let mut lens = vec![1; num_inputs];
    let accesses = random_accesses(rng, naccess, num_inputs, &shape, &mut lens);
    let program = random_program(rng, naccess, false, false);
    let inputs = random_inputs(rng, &lens, false);
    let k = LoopKernel {
        shape,
        num_inputs,
        accesses,
        program,
        reduction: None,
        window: None,
    };
    (k, inputs)
}

fn random_reduction(rng: &mut Rng, exact: bool) -> (LoopKernel, Vec<Vec<f32>>) {
    let rank = rng.range(1, 4);
    let shape = random_shape(rng, rank);
    let axes = rng.range(1, rank.min(3));
    let lead = rank - axes;
    let op = if exact {
        rng.pick(&[ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max])
    } else {
        ReduceOp::Max
    };
    let num_inputs = rng.range(1, 3);
    let naccess = rng.range(1, 3);
    let mut lens = vec![1; num_inputs];
    let accesses = random_accesses(rng, naccess, num_inputs, &shape, &mut lens);
    let program = random_program(rng, naccess, false, exact);
    let (epilogue, epilogue_accesses) = if rng.chance(0.7) {
        let ne = rng.range(0, 2);
        let ea = random_accesses(rng, ne, num_inputs, &shape[..lead], &mut lens);
        (random_program(rng, ne, true, false), ea)
    } else {
        (vec![], vec![])
    };
    // Sometimes further results of the same pass: other steps of the program (the loads and
    // arithmetic the main result shares), each with its own epilogue.
    let more = if rng.chance(0.4) {
        (0..rng.range(1, 2))
            .map(|_| MoreResult {
                step: rng.range(0, program.len() - 1),
                epilogue: if rng.chance(0.5) {
                    random_program(rng, epilogue_accesses.len(), true, false)
                } else {
                    vec![]
                },
            })
            .collect()
    } else {
        vec![]
    };
    let inputs = random_inputs(rng, &lens, exact);
    let k = LoopKernel {
        shape,
        num_inputs,
        accesses,
        program,
        reduction: Some(Reduction {
            op,
            axes,
            epilogue,
            epilogue_accesses,
            more,
        }),
        window: None,
    };
    (k, inputs)
}

fn random_window(rng: &mut Rng) -> (LoopKernel, Vec<Vec<f32>>) {
    let rank = rng.range(2, 4);
    let max = rng.chance(0.5);
    let in_hw = [rng.range(1, 12), rng.range(1, 12)];
    let mut kernel = [0; 2];
    let mut stride = [0; 2];
    let mut padding = [0; 4];
    let mut dilation = [1; 2];
    let mut out = [0; 2];
    for ax in 0..2 {
        let d = if max { rng.range(1, 2) } else { 1 };
        let k = rng.range(1, 4);
        let s = rng.range(1, 3);
        let p = rng.range(0, k / 2);
        // A ceil-mode-like extra bottom/right padding, so the last window may hang over.
        let extra = rng.range(0, s - 1);
        let span = d * (k - 1) + 1;
        let total = in_hw[ax] + 2 * p + extra;
        let (k, d) = if total < span { (1, 1) } else { (k, d) };
        let span = d * (k - 1) + 1;
        kernel[ax] = k;
        stride[ax] = s;
        dilation[ax] = d;
        padding[2 * ax] = p;
        padding[2 * ax + 1] = p + extra;
        out[ax] = (total - span) / s + 1;
        // PyTorch's ceil-mode rule: the last window starts inside the input or top padding.
        if (out[ax] - 1) * s >= in_hw[ax] + p {
            out[ax] -= 1;
        }
    }
    let mut shape = random_shape(rng, rank - 2);
    shape.extend(out);
    // The input [lead.., H, W]: dense, sometimes with H and W transposed.
    let mut in_shape = shape[..rank - 2].to_vec();
    in_shape.extend(in_hw);
    let mut strides = vec![0isize; rank];
    let mut size = 1;
    let mut order: Vec<usize> = (0..rank).collect();
    if rng.chance(0.3) {
        order.swap(rank - 1, rank - 2);
    }
    for &d in order.iter().rev() {
        strides[d] = size as isize;
        size *= in_shape[d];
    }
    let access = Access {
        input: 0,
        strides,
        offset: 0,
    };
    let program = match rng.range(0, 3) {
        0 => vec![Scalar::Load(0), Scalar::Unary(UnaryOp::Relu, 0)],
        _ => vec![Scalar::Load(0)],
    };
    let inputs = random_inputs(rng, &[size], false);
    let k = LoopKernel {
        shape,
        num_inputs: 1,
        accesses: vec![access],
        program,
        reduction: None,
        window: Some(Window {
            max,
            count_include_pad: rng.chance(0.5),
            in_hw,
            kernel,
            stride,
            padding,
            dilation,
        }),
    };
    (k, inputs)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn elementwise_kernels_match(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (k, inputs) = random_plain(&mut rng);
        check(&k, &inputs, &mut rng)?;
    }

    #[test]
    fn exact_reductions_match(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (k, inputs) = random_reduction(&mut rng, true);
        check(&k, &inputs, &mut rng)?;
    }

    #[test]
    fn max_reductions_of_any_program_match(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (k, inputs) = random_reduction(&mut rng, false);
        check(&k, &inputs, &mut rng)?;
    }

    #[test]
    fn windows_match(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (k, inputs) = random_window(&mut rng);
        check(&k, &inputs, &mut rng)?;
    }
}

proptest! {
    #![proptest_config(config(100))]

    /// Sums of arbitrary (inexact) programs: equal up to f32 summation-order rounding.
    #[test]
    fn inexact_sums_match_within_rounding(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (mut k, inputs) = random_reduction(&mut rng, false);
        k.reduction.as_mut().unwrap().op = rng.pick(&[ReduceOp::Sum, ReduceOp::Mean]);
        check(&k, &inputs, &mut rng)?;
    }
}

// ---------------------------------------------------------------- fixed cases

/// A case the property test found: a sigmoid of a max near -103.3 whose true value rounds
/// to the smallest subnormal or to zero.
#[test]
fn a_subnormal_result_compares_equal_to_zero() {
    let mut rng = Rng(1311151234540277958);
    let (k, inputs) = random_reduction(&mut rng, false);
    check(&k, &inputs, &mut rng).unwrap();
}

fn add_kernel(shape: &[usize]) -> LoopKernel {
    let dense = |n: usize| {
        let mut s = vec![1isize; n];
        for d in (0..n.saturating_sub(1)).rev() {
            s[d] = s[d + 1] * shape[d + 1] as isize;
        }
        s
    };
    LoopKernel {
        shape: shape.to_vec(),
        num_inputs: 2,
        accesses: vec![
            Access {
                input: 0,
                strides: dense(shape.len()),
                offset: 0,
            },
            Access {
                input: 1,
                strides: dense(shape.len()),
                offset: 0,
            },
        ],
        program: vec![
            Scalar::Load(0),
            Scalar::Load(1),
            Scalar::Binary(BinaryOp::Add, 0, 1),
        ],
        reduction: None,
        window: None,
    }
}

fn relu_kernel(shape: &[usize]) -> LoopKernel {
    let mut k = add_kernel(shape);
    k.num_inputs = 1;
    k.accesses.truncate(1);
    k.program = vec![Scalar::Load(0), Scalar::Unary(UnaryOp::Relu, 0)];
    k
}

#[test]
fn cache_returns_the_same_kernel() {
    let mut jit = Jit::new().unwrap();
    let k = add_kernel(&[3, 5]);
    let a = jit.compile(&k).unwrap();
    let b = jit.compile(&k.clone()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(jit.cached(), 1);
    let c = jit.compile(&add_kernel(&[5, 3])).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(jit.cached(), 2);
}

#[test]
fn contiguous_kernels_vectorize_and_keep_their_code() {
    let mut jit = Jit::new().unwrap();
    let c = jit.compile(&add_kernel(&[2, 3, 7, 9])).unwrap();
    assert!(c.vectorized);
    assert!(c.clif.contains("f32x4"), "{}", c.clif);
    let asm = c.asm.as_deref().expect("disassembly");
    assert!(asm.contains("addps"), "{asm}");
    // A transposed read cannot use 4-lane loads.
    let mut k = add_kernel(&[6, 7]);
    k.accesses[1].strides = vec![1, 6];
    assert!(!jit.compile(&k).unwrap().vectorized);
}

/// `max`/`min` of every pair of special values, either operand NaN, through the vector loop
/// and the scalar tail: NaN if either is NaN (`torch.maximum`), else the definition's value.
#[test]
fn max_and_min_propagate_nan_from_either_operand() {
    let mut jit = Jit::new().unwrap();
    let vals = [-1.0, 0.0, 2.5, f32::NAN, f32::INFINITY, -f32::INFINITY];
    let (mut a, mut b): (Vec<f32>, Vec<f32>) = vals
        .iter()
        .flat_map(|&x| vals.iter().map(move |&y| (x, y)))
        .unzip();
    // 37 pairs: the last one in the scalar tail.
    a.push(1.0);
    b.push(f32::NAN);
    for op in [BinaryOp::Max, BinaryOp::Min] {
        let mut k = add_kernel(&[a.len()]);
        k.program[2] = Scalar::Binary(op, 0, 1);
        let c = jit.compile(&k).unwrap();
        let mut out = vec![7.0f32; a.len()];
        c.run(&[&a, &b], &mut out, 0, c.outer).unwrap();
        for i in 0..a.len() {
            let want = op.apply(f64::from(a[i]), f64::from(b[i])) as f32;
            assert!(
                out[i] == want || (out[i].is_nan() && want.is_nan()),
                "{op:?}({}, {}) = {}, want {want}",
                a[i],
                b[i],
                out[i]
            );
            assert_eq!(want.is_nan(), a[i].is_nan() || b[i].is_nan());
        }
    }
}

#[test]
fn relu_keeps_nan_and_negative_zero() {
    let mut jit = Jit::new().unwrap();
    let c = jit.compile(&relu_kernel(&[9])).unwrap();
    let x = [
        -1.0,
        -0.0,
        0.0,
        2.5,
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        1e-40,
        -1e-40,
    ];
    let mut out = [7.0f32; 9];
    c.run(&[&x], &mut out, 0, c.outer).unwrap();
    for (&x, &y) in x.iter().zip(&out) {
        // The same bits: NaN stays NaN and -0 stays -0, as PyTorch's relu.
        let want = UnaryOp::Relu.apply(f64::from(x)) as f32;
        assert_eq!(y.to_bits(), want.to_bits(), "relu({x}) = {y}, want {want}");
    }
}

/// The inline exp, tanh and sigmoid against f64 over a dense sweep, through both the vector
/// loop and the scalar tail (a length that is not a multiple of 4).
#[test]
fn inline_transcendentals_are_accurate() {
    let mut jit = Jit::new().unwrap();
    let mut xs: Vec<f32> = (0..200_001).map(|i| -50.0 + i as f32 * 5e-4).collect();
    xs.extend((0..2000).map(|i| (i as f32 - 1000.0) * 1e-6));
    xs.extend([
        -0.0, 0.0, 1e-30, -1e-30, 0.625, -0.625, 88.0, 88.7, -87.0, -100.0,
    ]);
    xs.extend([f32::INFINITY, -f32::INFINITY, 90.0, -200.0, f32::NAN]);
    // Where exp's true value rounds to 0 (below ln(2^-150) ≈ -103.972) or to a subnormal.
    let underflow = [-103.98f32, -104.0, -200.0, -1000.0];
    xs.extend(underflow);
    xs.extend([-103.96f32, -103.5, -103.0]);
    for op in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid] {
        let mut k = relu_kernel(&[xs.len()]);
        k.program = vec![Scalar::Load(0), Scalar::Unary(op, 0)];
        let c = jit.compile(&k).unwrap();
        assert!(c.vectorized);
        let mut out = vec![0.0f32; xs.len()];
        c.run(&[&xs], &mut out, 0, c.outer).unwrap();
        if op != UnaryOp::Tanh {
            for (&x, &y) in xs.iter().zip(&out) {
                if underflow.contains(&x) || x == f32::NEG_INFINITY {
                    assert_eq!(y.to_bits(), 0, "{op:?}({x}) = {y:e}, not +0");
                }
                if [-103.96f32, -103.5].contains(&x) {
                    // True values 7.1e-46 and 1.2e-45: the smallest subnormal.
                    assert_eq!(y.to_bits(), 1, "{op:?}({x}) = {y:e}");
                }
            }
        }
        let mut worst = (0.0f64, 0.0f32);
        for (&x, &y) in xs.iter().zip(&out) {
            let want = op.apply(f64::from(x));
            if want.is_nan() {
                assert!(y.is_nan(), "{op:?}({x}) = {y}");
                continue;
            }
            let want32 = want as f32;
            if want32 == y || (want.abs() < 1.2e-38 && (f64::from(y) - want).abs() < 1e-44) {
                continue; // exact, or close in the subnormal range
            }
            let rel = (f64::from(y) - want).abs() / want.abs();
            if rel > worst.0 {
                worst = (rel, x);
            }
        }
        println!(
            "{op:?}: worst relative error {:.2e} at {}",
            worst.0, worst.1
        );
        assert!(
            worst.0 <= 5e-7,
            "{op:?}: relative error {:e} at {}",
            worst.0,
            worst.1
        );
    }
}

#[test]
fn rank0_kernels_and_malformed_kernels() {
    let mut jit = Jit::new().unwrap();
    let k = LoopKernel {
        shape: vec![],
        num_inputs: 1,
        accesses: vec![Access {
            input: 0,
            strides: vec![],
            offset: 2,
        }],
        program: vec![Scalar::Load(0), Scalar::Unary(UnaryOp::Exp, 0)],
        reduction: None,
        window: None,
    };
    let c = jit.compile(&k).unwrap();
    let mut out = [0.0f32];
    c.run(&[&[0.0, 0.0, 1.0]], &mut out, 0, 1).unwrap();
    assert_eq!(out[0], 1.0f64.exp() as f32);
    // Bounds are checked by `run`.
    assert!(c.run(&[&[0.0, 0.0]], &mut out, 0, 1).is_err());
    assert!(c.run(&[&[0.0, 0.0, 1.0]], &mut out, 0, 2).is_err());
    let mut bad = k.clone();
    bad.program.push(Scalar::Binary(BinaryOp::Add, 0, 5));
    assert!(jit.compile(&bad).is_err());
    let mut bad = k;
    bad.accesses[0].input = 1;
    assert!(jit.compile(&bad).is_err());
}

// ---------------------------------------------------------------- micro-benchmark

fn gbps(c: &CompiledKernel, inputs: &[Vec<f32>], streams: usize) -> f64 {
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut out = vec![0.0f32; c.output_len];
    c.run(&ins, &mut out, 0, c.outer).unwrap();
    let reps = 20;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        c.run(&ins, &mut out, 0, c.outer).unwrap();
    }
    let secs = t.elapsed().as_secs_f64() / f64::from(reps);
    (c.output_len * 4 * streams) as f64 / secs / 1e9
}

/// `cargo test --release --test codegen -- --ignored --nocapture bench`: GB/s of the compiled
/// add, relu and broadcast bias-add over `[16, 64, 56, 56]` (DRAM-bound) and `[1, 64, 56, 56]`
/// (cache-resident), at both Cranelift optimization levels, and a plain Rust loop for scale.
#[test]
#[ignore]
fn bench_elementwise_gbps() {
    for shape in [[16, 64, 56, 56], [1, 64, 56, 56]] {
        let n: usize = shape.iter().product();
        let a: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 48.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 89) as f32 * 0.5).collect();
        for level in [OptLevel::None, OptLevel::Speed] {
            let mut jit = Jit::with_opt_level(level).unwrap();
            let add = jit.compile(&add_kernel(&shape)).unwrap();
            let relu = jit.compile(&relu_kernel(&shape)).unwrap();
            let mut t = add_kernel(&shape);
            t.accesses[1].strides = vec![0, 1, 0, 0]; // per-channel bias: a broadcast load
            let bias = jit.compile(&t).unwrap();
            let mut t = relu_kernel(&shape);
            t.program = vec![Scalar::Load(0), Scalar::Unary(UnaryOp::Sigmoid, 0)];
            let sigmoid = jit.compile(&t).unwrap();
            t.program = vec![Scalar::Load(0), Scalar::Unary(UnaryOp::Log, 0)];
            let log = jit.compile(&t).unwrap();
            println!(
                "{shape:?} {level:?}: add {:.1} GB/s, relu {:.1} GB/s, bias-add {:.1} GB/s, \
                 sigmoid {:.1} GB/s, log (helper call) {:.1} GB/s; compile {:?}",
                gbps(&add, &[a.clone(), b.clone()], 3),
                gbps(&relu, std::slice::from_ref(&a), 2),
                gbps(&bias, &[a.clone(), b[..64].to_vec()], 2),
                gbps(&sigmoid, std::slice::from_ref(&a), 2),
                gbps(&log, std::slice::from_ref(&b), 2),
                add.compile_time,
            );
        }
        let mut out = vec![0.0f32; n];
        let reps = 20;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            for ((o, x), y) in out.iter_mut().zip(&a).zip(&b) {
                *o = x + y;
            }
            std::hint::black_box(&mut out);
        }
        let secs = t.elapsed().as_secs_f64() / f64::from(reps);
        println!(
            "{shape:?} rust add loop: {:.1} GB/s",
            (n * 12) as f64 / secs / 1e9
        );
    }
}

/// Prints the machine code of an add kernel at both optimization levels.
#[test]
#[ignore]
fn print_add_kernel_asm() {
    for level in [OptLevel::None, OptLevel::Speed] {
        let mut jit = Jit::with_opt_level(level).unwrap();
        let c = jit.compile(&add_kernel(&[16, 64, 56, 56])).unwrap();
        println!("==== {level:?}\n{}", c.asm.as_deref().unwrap());
        let mut k = relu_kernel(&[1000]);
        k.program = vec![Scalar::Load(0), Scalar::Unary(UnaryOp::Sigmoid, 0)];
        let c = jit.compile(&k).unwrap();
        println!("==== sigmoid {level:?}\n{}", c.asm.as_deref().unwrap());
    }
}

#[test]
fn compiled_kernels_are_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CompiledKernel>();
    fn sendable<T: Send>() {}
    sendable::<Jit>();
}
