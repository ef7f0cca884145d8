//! Every gradient rule of `netc::autodiff` against central finite differences, in f64 on the
//! reference interpreter, with random inputs of odd sizes; plus the gradient primitives
//! through the JIT against the interpreter.
//!
//! Each case builds `out = op(inputs)` and differentiates `L = Σ out * upstream` (a random
//! `upstream`), so every element of the op's Jacobian is exercised.

use ndarray::{ArrayD, IxDyn};
use netc::autodiff::backward;
use netc::graph::{BinaryOp, Graph, Op, PoolOp, ReduceOp, UnaryOp, ValueId};

/// A deterministic uniform generator (SplitMix64).
/// This file's seeded values: the project's SplitMix64 (`netc::data::rng::splitmix64`) with
/// the draws these tests need (seeds of past failures stay reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        (netc::data::rng::splitmix64(&mut self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|_| lo + (hi - lo) * self.next()).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    let v = g.push(
        Op::Input { name: name.into() },
        vec![],
        shape.to_vec(),
        "test",
    );
    g.inputs.push((name.into(), v));
    v
}

/// `Σ out * upstream` as a `[1]` value.
fn dot_upstream(g: &mut Graph, out: ValueId) -> ValueId {
    let shape = g.shape(out).to_vec();
    let up = input(g, "upstream", &shape);
    let p = g.add(Op::Binary(BinaryOp::Mul), vec![out, up], "test");
    let all: Vec<usize> = (0..shape.len()).collect();
    let s = if all.is_empty() {
        p
    } else {
        g.add(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: all,
            },
            vec![p],
            "test",
        )
    };
    g.push(Op::Reshape, vec![s], vec![1], "test")
}

/// Checks the gradients of `L = Σ op(inputs) * upstream` with respect to every input (those
/// named in `no_grad` must get none) against central differences.
fn check(
    case: &str,
    inputs: &[(&str, ArrayD<f64>)],
    build: impl Fn(&mut Graph, &[ValueId]) -> ValueId,
) {
    check_with(case, inputs, &[], build)
}

fn check_with(
    case: &str,
    inputs: &[(&str, ArrayD<f64>)],
    no_grad: &[&str],
    build: impl Fn(&mut Graph, &[ValueId]) -> ValueId,
) {
    let mut rng = Rng(case.len() as u64 * 7919);
    let mut g = Graph::default();
    let ids: Vec<ValueId> = inputs
        .iter()
        .map(|(n, a)| input(&mut g, n, a.shape()))
        .collect();
    let out = build(&mut g, &ids);
    let loss = dot_upstream(&mut g, out);
    let upstream = rng.array(g.shape(out), -1.0, 1.0);
    let mut fwd = g.clone();
    fwd.outputs = vec![("loss".into(), loss)];
    let grads = backward(&mut g, loss, None, &ids).unwrap();
    g.outputs = grads
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.map(|v| (format!("grad{k}"), v)))
        .collect();
    let mut feed: Vec<(&str, ArrayD<f64>)> = inputs.iter().map(|(n, a)| (*n, a.clone())).collect();
    feed.push(("upstream", upstream.clone()));
    let analytic = netc::reference::run::<f64>(&g, &[], &feed).unwrap();
    let eval = |feed: &[(&str, ArrayD<f64>)]| -> f64 {
        netc::reference::run::<f64>(&fwd, &[], feed).unwrap()[0][[0]]
    };
    let mut next = 0;
    for (k, (name, x)) in inputs.iter().enumerate() {
        if no_grad.contains(name) {
            assert!(
                grads[k].is_none(),
                "{case}: `{name}` should get no gradient"
            );
            continue;
        }
        let Some(_) = grads[k] else {
            panic!("{case}: no gradient for `{name}`");
        };
        let got = &analytic[next];
        next += 1;
        assert_eq!(got.shape(), x.shape(), "{case}: gradient shape of `{name}`");
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        let scale = got.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for i in 0..x.len() {
            let mut f = feed.clone();
            let xs = f[k].1.as_slice_mut().unwrap();
            xs[i] += h;
            let plus = eval(&f);
            let xs = f[k].1.as_slice_mut().unwrap();
            xs[i] -= 2.0 * h;
            let minus = eval(&f);
            let fd = (plus - minus) / (2.0 * h);
            let a = got.as_slice().unwrap()[i];
            worst = worst.max((fd - a).abs() / scale);
        }
        assert!(
            worst < 1e-6,
            "{case}: gradient of `{name}` differs from finite differences by {worst:e} (relative)"
        );
    }
}

fn arr(shape: &[usize], seed: u64, lo: f64, hi: f64) -> ArrayD<f64> {
    Rng(seed).array(shape, lo, hi)
}

#[test]
fn unary_rules() {
    let ops = [
        (UnaryOp::Neg, -2.0, 2.0),
        (UnaryOp::Relu, -2.0, 2.0),
        (UnaryOp::Exp, -2.0, 2.0),
        (UnaryOp::Log, 0.3, 3.0),
        (UnaryOp::Sqrt, 0.3, 3.0),
        (UnaryOp::Rsqrt, 0.3, 3.0),
        (UnaryOp::Recip, 0.3, 3.0),
        (UnaryOp::Tanh, -2.0, 2.0),
        (UnaryOp::Sigmoid, -3.0, 3.0),
        (UnaryOp::Abs, -2.0, 2.0),
    ];
    for (i, (u, lo, hi)) in ops.into_iter().enumerate() {
        let x = arr(&[3, 5, 7], 10 + i as u64, lo, hi);
        check(&format!("{u:?}"), &[("x", x)], |g, v| {
            g.add(Op::Unary(u), vec![v[0]], "t")
        });
    }
}

/// `detach` is the identity forward and passes no gradient back: d/dx (x · detach(x)) is
/// x, not 2x, and a value reached only through it gets no gradient at all.
#[test]
fn detach_passes_no_gradient() {
    let x = arr(&[2, 3, 5], 30, -2.0, 2.0);
    let mut g = Graph::default();
    let xv = input(&mut g, "x", x.shape());
    let d = g.add(Op::Unary(UnaryOp::Detach), vec![xv], "t");
    let y = g.add(Op::Binary(BinaryOp::Mul), vec![xv, d], "t");
    let loss = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![0, 1, 2],
        },
        vec![y],
        "t",
    );
    let grads = backward(&mut g, loss, None, &[xv]).unwrap();
    g.outputs = vec![("dx".into(), grads[0].unwrap()), ("y".into(), y)];
    let got = netc::reference::run::<f64>(&g, &[], &[("x", x.clone())]).unwrap();
    for (a, b) in got[0].iter().zip(x.iter()) {
        assert_eq!(a, b, "d/dx (x · detach(x)) = detach(x)");
    }
    for (a, b) in got[1].iter().zip(x.iter()) {
        assert_eq!(*a, b * b, "detach is the identity forward");
    }
}

#[test]
fn binary_rules_with_broadcasting() {
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
    ];
    // Equal shapes, a broadcast middle axis, a broadcast leading rank.
    let shapes: [(&[usize], &[usize]); 3] = [
        (&[3, 5], &[3, 5]),
        (&[3, 1, 5], &[3, 4, 5]),
        (&[2, 3, 5], &[1, 5]),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            let (lo, hi) = if matches!(op, BinaryOp::Div | BinaryOp::Pow) {
                (0.5, 2.0)
            } else {
                (-2.0, 2.0)
            };
            let a = arr(sa, 100 + (i * 3 + j) as u64, lo, hi);
            let b = arr(sb, 200 + (i * 3 + j) as u64, lo, hi);
            check(
                &format!("{op:?} {sa:?} {sb:?}"),
                &[("a", a), ("b", b)],
                |g, v| g.add(Op::Binary(op), vec![v[0], v[1]], "t"),
            );
        }
    }
    // A scalar exponent, as `x^2` in losses.
    check(
        "pow scalar",
        &[("x", arr(&[4, 3], 5, -2.0, 2.0))],
        |g, v| {
            let two = g.add(Op::Scalar { value: 2.0 }, vec![], "t");
            g.add(Op::Binary(BinaryOp::Pow), vec![v[0], two], "t")
        },
    );
    // A comparison has no gradient, and neither has a select's condition.
    check_with(
        "greater",
        &[
            ("a", arr(&[3, 4], 6, -1.0, 1.0)),
            ("b", arr(&[3, 4], 7, -1.0, 1.0)),
            ("x", arr(&[3, 4], 8, -1.0, 1.0)),
        ],
        &["a", "b"],
        |g, v| {
            let c = g.add(Op::Binary(BinaryOp::Greater), vec![v[0], v[1]], "t");
            g.add(Op::Binary(BinaryOp::Mul), vec![c, v[2]], "t")
        },
    );
}

#[test]
fn select_rule() {
    let c = arr(&[3, 1, 5], 9, -1.0, 1.0).mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
    check_with(
        "select",
        &[
            ("c", c),
            ("a", arr(&[3, 4, 5], 10, -1.0, 1.0)),
            ("b", arr(&[4, 1], 11, -1.0, 1.0)),
        ],
        &["c"],
        |g, v| g.add(Op::Select, vec![v[0], v[1], v[2]], "t"),
    );
}

#[test]
fn reduce_rules() {
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
        for axes in [vec![0], vec![1], vec![0, 2], vec![0, 1, 2]] {
            let x = arr(&[3, 5, 7], 12, -2.0, 2.0);
            check(&format!("reduce {op:?} {axes:?}"), &[("x", x)], |g, v| {
                g.add(
                    Op::Reduce {
                        op,
                        axes: axes.clone(),
                    },
                    vec![v[0]],
                    "t",
                )
            });
        }
    }
}

#[test]
fn conv2d_rule() {
    // (x shape, w shape, stride, padding, dilation, groups)
    type Case = (
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [usize; 4],
        [usize; 2],
        usize,
    );
    let cases: [Case; 4] = [
        ([2, 3, 7, 6], [4, 3, 3, 2], [2, 1], [1, 0, 2, 1], [1, 2], 1),
        ([1, 4, 5, 5], [6, 2, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 2),
        ([2, 3, 6, 5], [3, 1, 3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 3),
        ([3, 5, 3, 3], [2, 5, 1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),
    ];
    for (i, (xs, ws, stride, padding, dilation, groups)) in cases.into_iter().enumerate() {
        let x = arr(&xs, 20 + i as u64, -1.0, 1.0);
        let w = arr(&ws, 30 + i as u64, -1.0, 1.0);
        check(
            &format!("conv2d case {i}"),
            &[("x", x), ("w", w)],
            |g, v| {
                g.add(
                    Op::Conv2d {
                        stride,
                        padding,
                        dilation,
                        groups,
                    },
                    vec![v[0], v[1]],
                    "t",
                )
            },
        );
    }
}

#[test]
fn matmul_rule() {
    for transpose_b in [false, true] {
        let a = arr(&[2, 3, 5], 40, -1.0, 1.0);
        let b = if transpose_b {
            arr(&[2, 7, 5], 41, -1.0, 1.0)
        } else {
            arr(&[2, 5, 7], 41, -1.0, 1.0)
        };
        check(
            &format!("matmul transpose_b={transpose_b}"),
            &[("a", a), ("b", b)],
            |g, v| g.add(Op::MatMul { transpose_b }, vec![v[0], v[1]], "t"),
        );
    }
    check(
        "matmul 2d",
        &[
            ("a", arr(&[3, 5], 42, -1.0, 1.0)),
            ("b", arr(&[7, 5], 43, -1.0, 1.0)),
        ],
        |g, v| g.add(Op::MatMul { transpose_b: true }, vec![v[0], v[1]], "t"),
    );
}

#[test]
fn pooling_rules() {
    type Case = (PoolOp, [usize; 2], [usize; 2], [usize; 4], [usize; 2], bool);
    let cases: [Case; 5] = [
        (PoolOp::Max, [2, 2], [2, 2], [0; 4], [1, 1], false),
        (PoolOp::Max, [3, 3], [2, 2], [0; 4], [1, 1], true),
        (PoolOp::Max, [3, 2], [1, 2], [1, 1, 1, 0], [2, 1], false),
        (
            PoolOp::Avg {
                count_include_pad: true,
            },
            [3, 3],
            [2, 2],
            [1, 1, 1, 1],
            [1, 1],
            false,
        ),
        (
            PoolOp::Avg {
                count_include_pad: false,
            },
            [3, 3],
            [2, 2],
            [1, 1, 1, 1],
            [1, 1],
            true,
        ),
    ];
    for (i, (op, kernel, stride, padding, dilation, ceil_mode)) in cases.into_iter().enumerate() {
        let x = arr(&[2, 3, 7, 6], 50 + i as u64, -1.0, 1.0);
        check(&format!("pool case {i}"), &[("x", x)], |g, v| {
            g.add(
                Op::Pool {
                    op,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    ceil_mode,
                },
                vec![v[0]],
                "t",
            )
        });
    }
    for output in [[3, 2], [1, 1], [7, 4]] {
        let x = arr(&[2, 3, 7, 5], 60, -1.0, 1.0);
        check(&format!("adaptive {output:?}"), &[("x", x)], |g, v| {
            g.add(Op::AdaptiveAvgPool { output }, vec![v[0]], "t")
        });
    }
}

#[test]
fn movement_rules() {
    let x = || arr(&[2, 3, 5], 70, -1.0, 1.0);
    check("reshape", &[("x", x())], |g, v| {
        g.push(Op::Reshape, vec![v[0]], vec![6, 5], "t")
    });
    check("permute", &[("x", x())], |g, v| {
        g.add(
            Op::Permute {
                perm: vec![2, 0, 1],
            },
            vec![v[0]],
            "t",
        )
    });
    check("slice", &[("x", x())], |g, v| {
        g.add(
            Op::Slice {
                axis: 2,
                start: 1,
                end: 4,
            },
            vec![v[0]],
            "t",
        )
    });
    check("pad", &[("x", x())], |g, v| {
        g.add(
            Op::Pad {
                axis: 1,
                before: 2,
                after: 1,
            },
            vec![v[0]],
            "t",
        )
    });
    check("expand", &[("x", arr(&[3, 1], 71, -1.0, 1.0))], |g, v| {
        g.push(Op::Expand, vec![v[0]], vec![2, 3, 4], "t")
    });
    check(
        "concat",
        &[
            ("a", arr(&[2, 3, 5], 72, -1.0, 1.0)),
            ("b", arr(&[2, 1, 5], 73, -1.0, 1.0)),
            ("c", arr(&[2, 2, 5], 74, -1.0, 1.0)),
        ],
        |g, v| g.add(Op::Concat { axis: 1 }, vec![v[0], v[1], v[2]], "t"),
    );
}

#[test]
fn shared_values_accumulate_and_composites_work() {
    // x used three times; softmax cross-entropy style composite with a max reduction.
    check(
        "composite",
        &[("x", arr(&[3, 5], 80, -2.0, 2.0))],
        |g, v| {
            let x = v[0];
            let m = g.add(
                Op::Reduce {
                    op: ReduceOp::Max,
                    axes: vec![1],
                },
                vec![x],
                "t",
            );
            let d = g.add(Op::Binary(BinaryOp::Sub), vec![x, m], "t");
            let e = g.add(Op::Unary(UnaryOp::Exp), vec![d], "t");
            let s = g.add(
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: vec![1],
                },
                vec![e],
                "t",
            );
            let l = g.add(Op::Unary(UnaryOp::Log), vec![s], "t");
            let y = g.add(Op::Binary(BinaryOp::Sub), vec![d, l], "t");
            g.add(Op::Binary(BinaryOp::Mul), vec![y, x], "t")
        },
    );
}

#[test]
fn values_off_the_path_get_no_gradient() {
    let mut g = Graph::default();
    let a = input(&mut g, "a", &[2, 2]);
    let b = input(&mut g, "b", &[2, 2]);
    let r = g.add(Op::RandomMask { p: 0.5, seed: 1 }, vec![b], "t");
    let y = g.add(Op::Binary(BinaryOp::Mul), vec![a, r], "t");
    let loss = dot_upstream(&mut g, y);
    let before = g.nodes.len();
    let grads = backward(&mut g, loss, None, &[a, b]).unwrap();
    assert!(grads[0].is_some());
    assert!(grads[1].is_none(), "a mask's input gets no gradient");
    assert!(g.nodes.len() > before);
}

fn dot_upstream_named(g: &mut Graph, out: ValueId) -> ValueId {
    let all: Vec<usize> = (0..g.shape(out).len()).collect();
    let s = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: all,
        },
        vec![out],
        "test",
    );
    g.push(Op::Reshape, vec![s], vec![1], "test")
}

#[test]
fn second_derivatives_of_gradient_primitives_are_refused() {
    let mut g = Graph::default();
    let x = input(&mut g, "x", &[1, 1, 4, 4]);
    let w = input(&mut g, "w", &[1, 1, 3, 3]);
    let conv = Op::Conv2d {
        stride: [1, 1],
        padding: [1; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let y = g.add(conv, vec![x, w], "t");
    let loss = dot_upstream_named(&mut g, y);
    let grads = backward(&mut g, loss, None, &[x]).unwrap();
    let l2 = dot_upstream_named(&mut g, grads[0].unwrap());
    let err = backward(&mut g, l2, None, &[w]).unwrap_err();
    assert!(err.contains("first derivatives"), "{err}");
}

/// The gradient primitives through fusion and the JIT (GEMM + col2im, packed small images,
/// per-thread partial sums, parallel pooling backward) against the reference interpreter, in
/// f32 on random inputs with odd sizes.
#[test]
fn gradient_kernels_in_the_jit_match_the_oracle() {
    type Case = (
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [usize; 4],
        [usize; 2],
        usize,
    );
    let convs: [Case; 15] = [
        // 7x7 maps: the backward-data pass alone in Winograd F(2x2) form (8x8 computed).
        (
            [8, 16, 7, 7],
            [17, 16, 3, 3],
            [1, 1],
            [1, 1, 1, 1],
            [1, 1],
            1,
        ),
        // Enough tiles of 4x4 for the F(4x4, 3x3) Winograd form (forward, backward-data and
        // weight gradient), whole maps and, with asymmetric padding, edge tiles that hang over
        // the output.
        (
            [2, 16, 28, 28],
            [18, 16, 3, 3],
            [1, 1],
            [1, 1, 1, 1],
            [1, 1],
            1,
        ),
        (
            [3, 17, 22, 26],
            [16, 17, 3, 3],
            [1, 1],
            [0, 2, 2, 1],
            [1, 1],
            1,
        ),
        // Small maps, many images: Winograd tasks of several images each.
        (
            [7, 16, 12, 12],
            [17, 16, 3, 3],
            [1, 1],
            [1, 1, 1, 1],
            [1, 1],
            1,
        ),
        // 3x3 stride 1 with enough tiles: the Winograd form, forward and backward-data, by
        // whole images (3 images, 2 threads) and by tile ranges (1 image), asymmetric padding.
        (
            [3, 17, 13, 21],
            [19, 17, 3, 3],
            [1, 1],
            [1, 1, 1, 1],
            [1, 1],
            1,
        ),
        (
            [1, 16, 20, 30],
            [18, 16, 3, 3],
            [1, 1],
            [0, 2, 2, 1],
            [1, 1],
            1,
        ),
        // 1x1 maps through 1x1 kernels (cropped 3x3s): all images in one product.
        ([5, 7, 1, 1], [6, 7, 1, 1], [1, 1], [0; 4], [1, 1], 1),
        ([5, 6, 1, 1], [4, 3, 1, 1], [1, 1], [0; 4], [1, 1], 2),
        // Stride 2 along rows wider than two vectors (the stride-2 im2col gather's blocks).
        ([2, 3, 9, 75], [4, 3, 3, 5], [1, 2], [1, 1, 2, 2], [1, 1], 1),
        ([7, 3, 9, 11], [5, 3, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        // Few pixels in all: threads split channels (input for data, output for weight).
        ([3, 9, 5, 5], [7, 9, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        (
            [5, 4, 13, 10],
            [6, 2, 3, 2],
            [2, 1],
            [1, 0, 2, 1],
            [1, 2],
            2,
        ),
        ([3, 6, 7, 7], [6, 1, 3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 6),
        ([7, 5, 6, 5], [4, 5, 1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1),
        (
            [2, 3, 37, 29],
            [4, 3, 5, 5],
            [1, 1],
            [2, 2, 2, 2],
            [1, 1],
            1,
        ),
    ];
    for (i, (xs, ws, stride, padding, dilation, groups)) in convs.into_iter().enumerate() {
        let x = arr(&xs, 90 + i as u64, -1.0, 1.0).mapv(|v| v as f32);
        let w = arr(&ws, 95 + i as u64, -1.0, 1.0).mapv(|v| v as f32);
        jit_vs_oracle(&format!("conv {i}"), &[("x", x), ("w", w)], |g, v| {
            g.add(
                Op::Conv2d {
                    stride,
                    padding,
                    dilation,
                    groups,
                },
                vec![v[0], v[1]],
                "t",
            )
        });
    }
    // (op, kernel, stride, padding, dilation, ceil mode, input shape, ties): "ties" rounds the
    // input to a few levels after a ReLU, so windows of equal values (PyTorch routes the
    // gradient to the first) are common, as they are after a real ReLU.
    type PoolCase = (
        PoolOp,
        [usize; 2],
        [usize; 2],
        [usize; 4],
        [usize; 2],
        bool,
        [usize; 4],
        bool,
    );
    let avg = PoolOp::Avg {
        count_include_pad: false,
    };
    let pools: [PoolCase; 9] = [
        (
            PoolOp::Max,
            [2, 2],
            [2, 2],
            [0; 4],
            [1, 1],
            false,
            [7, 5, 13, 11],
            false,
        ),
        (
            PoolOp::Max,
            [3, 3],
            [2, 2],
            [1; 4],
            [1, 1],
            true,
            [7, 5, 13, 11],
            false,
        ),
        (
            avg,
            [3, 2],
            [2, 1],
            [1, 1, 0, 1],
            [1, 1],
            true,
            [7, 5, 13, 11],
            false,
        ),
        // Wider than one vector run of windows (64), overlapping, with ties.
        (
            PoolOp::Max,
            [3, 3],
            [1, 1],
            [1; 4],
            [1, 1],
            false,
            [2, 3, 5, 150],
            true,
        ),
        (
            PoolOp::Max,
            [2, 2],
            [2, 2],
            [0; 4],
            [1, 1],
            true,
            [3, 4, 9, 141],
            true,
        ),
        // Stride 3 (lanes gathered), dilation, asymmetric padding.
        (
            PoolOp::Max,
            [2, 3],
            [3, 3],
            [0, 1, 1, 1],
            [1, 1],
            true,
            [3, 2, 11, 83],
            true,
        ),
        (
            PoolOp::Max,
            [3, 2],
            [1, 2],
            [2, 2, 1, 1],
            [2, 2],
            false,
            [2, 3, 9, 71],
            false,
        ),
        // Strides 4 and 5 (the scalar window loop of the backward pass), with ties.
        (
            PoolOp::Max,
            [4, 4],
            [4, 4],
            [1; 4],
            [1, 1],
            true,
            [2, 3, 13, 77],
            true,
        ),
        (
            PoolOp::Max,
            [5, 3],
            [2, 5],
            [2, 2, 1, 1],
            [1, 2],
            false,
            [1, 2, 15, 91],
            true,
        ),
    ];
    for (i, (op, kernel, stride, padding, dilation, ceil_mode, shape, ties)) in
        pools.into_iter().enumerate()
    {
        let mut x = arr(&shape, 100 + i as u64, -1.0, 1.0).mapv(|v| v as f32);
        if ties {
            x.mapv_inplace(|v| (v.max(0.0) * 3.0).round());
        }
        jit_vs_oracle(&format!("pool {i}"), &[("x", x)], |g, v| {
            g.add(
                Op::Pool {
                    op,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    ceil_mode,
                },
                vec![v[0]],
                "t",
            )
        });
    }
    // Slices large enough that they, and the pads of their gradients, split rows across
    // threads; the second keeps one tap of 9 (the pad writes rows of 9 floats).
    for (i, (shape, axis, start, end)) in [([5, 7, 37, 41], 2, 3, 35), ([7, 9, 61, 9], 3, 4, 5)]
        .into_iter()
        .enumerate()
    {
        let x = arr(&shape, 120 + i as u64, -1.0, 1.0).mapv(|v| v as f32);
        jit_vs_oracle(&format!("large slice {i}"), &[("x", x)], |g, v| {
            g.add(Op::Slice { axis, start, end }, vec![v[0]], "t")
        });
    }
    let x = arr(&[3, 5, 11, 9], 110, -1.0, 1.0).mapv(|v| v as f32);
    jit_vs_oracle("adaptive + slice + broadcast", &[("x", x)], |g, v| {
        let a = g.add(Op::AdaptiveAvgPool { output: [4, 3] }, vec![v[0]], "t");
        let s = g.add(
            Op::Slice {
                axis: 1,
                start: 1,
                end: 4,
            },
            vec![a],
            "t",
        );
        let m = g.add(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: vec![2, 3],
            },
            vec![s],
            "t",
        );
        g.add(Op::Binary(BinaryOp::Mul), vec![s, m], "t")
    });
}

/// Builds `L = Σ op(inputs) * upstream` with its gradients and compares every output of the
/// JIT (2 threads) with the oracle.
fn jit_vs_oracle(
    case: &str,
    inputs: &[(&str, ArrayD<f32>)],
    build: impl Fn(&mut Graph, &[ValueId]) -> ValueId,
) {
    let mut g = Graph::default();
    let ids: Vec<ValueId> = inputs
        .iter()
        .map(|(n, a)| input(&mut g, n, a.shape()))
        .collect();
    let out = build(&mut g, &ids);
    let loss = dot_upstream(&mut g, out);
    let upstream = Rng(7).array(g.shape(out), -1.0, 1.0).mapv(|v| v as f32);
    let grads = backward(&mut g, loss, None, &ids).unwrap();
    g.outputs = grads
        .iter()
        .enumerate()
        .map(|(k, v)| (format!("grad{k}"), v.unwrap()))
        .collect();
    let mut feed: Vec<(&str, ArrayD<f32>)> = inputs.iter().map(|(n, a)| (*n, a.clone())).collect();
    feed.push(("upstream", upstream));
    let want = netc::reference::run::<f32>(&g, &[], &feed).unwrap();
    let mut exe =
        netc::runtime::Executable::new(netc::fuse::fuse(&g), &[], netc::model::jit().unwrap(), 2)
            .unwrap();
    let refs: Vec<(&str, &ArrayD<f32>)> = feed.iter().map(|(n, a)| (*n, a)).collect();
    let got = exe.run(&refs).unwrap();
    for (k, ((name, a), b)) in got.iter().zip(&want).enumerate() {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        let e = (num / den.max(1e-30)).sqrt();
        assert!(
            e < 1e-5,
            "{case}: {name} (#{k}) differs from the oracle by {e:e}"
        );
    }
}

/// ReLU's gradient is PyTorch's `threshold_backward(dy, y, 0)`, `y <= 0 ? 0 : dy`: a NaN
/// output passes its gradient (it is not masked to 0), a zero or -0 output gives exactly 0
/// even for an infinite `dy` (no `0 · inf`).
#[test]
fn relu_gradient_at_nan_and_zero_is_pytorchs() {
    let mut g = Graph::default();
    let x = input(&mut g, "x", &[5]);
    let y = g.add(Op::Unary(UnaryOp::Relu), vec![x], "t");
    let loss = dot_upstream(&mut g, y);
    let grads = backward(&mut g, loss, None, &[x]).unwrap();
    g.outputs = vec![("dx".into(), grads[0].unwrap())];
    let xs = ArrayD::from_shape_vec(IxDyn(&[5]), vec![f64::NAN, -1.0, -0.0, 0.0, 2.0]).unwrap();
    let up =
        ArrayD::from_shape_vec(IxDyn(&[5]), vec![3.0, f64::INFINITY, f64::NAN, 5.0, 7.0]).unwrap();
    let dx = netc::reference::run::<f64>(&g, &[], &[("x", xs), ("upstream", up)]).unwrap();
    let dx: Vec<f64> = dx[0].iter().copied().collect();
    assert_eq!(dx[0], 3.0, "{dx:?}");
    assert_eq!(&dx[1..], &[0.0, 0.0, 0.0, 7.0], "{dx:?}");
}
