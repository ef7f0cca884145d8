//! Single ops and pairs of ops through the JIT against the reference interpreter, with random
//! parameters (property tests).
//!
//! Each case is a one- or two-layer spec written as text with random sizes and attributes,
//! seeded weights (biases and batchnorm statistics perturbed away from PyTorch's defaults, so
//! the bias, shift and folding paths compute something), a random batch of 1 to 3 and seeded
//! inputs. The compiled model (1 and 2 threads) must agree with `netc::reference::run` to a
//! relative error `||jit - ref|| / ||ref||` of at most 1e-5. (When cancellation makes a result
//! much smaller than the values it comes from, two f32 summation orders legitimately differ by
//! more than that; such outputs are compared with the f64 interpreter instead, see `check`.)
//! Random combinations the elaborator rejects (a kernel larger than the padded input) are
//! skipped; each test checks that most of its cases were valid.
//!
//! Covered: convolutions (1-13 spatial, 1-7 channels, square and rectangular kernels 1-5,
//! strides 1-3, padding 0-3 / pairs / `same` / `valid`, dilation 1-3, groups 1, depthwise and
//! grouped, bias on/off) followed by batchnorm, an activation and a residual block; larger
//! convolutions (20-48 spatial: im2col bands, row splits); max and average pooling (ceil,
//! count_include_pad, dilation); adaptive and global average pooling; dense layers with
//! batchnorm and activations; softmax, leaky_relu (slopes below 0 and above 1), sigmoid, tanh,
//! abs, batchnorm, l2_normalize on images and vectors; lrn; gram; concatenated branches.
//!
//! The cases are reproducible: each test uses a fixed proptest seed, which the environment
//! variable `NETC_OPS_SEED` replaces (to explore: `NETC_OPS_SEED=123 cargo test --test
//! jit_ops`). A failure prints the minimal (shrunk) spec, batch size and seed.

use std::cell::Cell;
use std::fmt;

use ndarray::{ArrayD, IxDyn};
use netc::data::rng::Rng;
use netc::io::weights::{Value, Weights};
use netc::layer_graph::{LayerGraph, ParamKind};
use netc::model::{CompileOptions, compile, params_f32};
use netc::{Options, load_str};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// The largest relative error allowed between the JIT and the reference interpreter.
const TOL: f64 = 1e-5;
/// When the result is much smaller than the values it is computed from (cancellation), the
/// largest RMS error allowed against the f64 interpreter. Inputs are in [-1, 1) and weights
/// keep activations of about that size, so this is a few roundings of values around 1.
const ABS_TOL: f64 = 1e-6;

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// A generated case.
#[derive(Clone)]
struct Case {
    spec: String,
    batch: usize,
    seed: u64,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch {}, seed {}, spec:\n{}",
            self.batch, self.seed, self.spec
        )
    }
}

/// Wraps a body (one statement a line) into a model with input `x: [c, h, w]`, and draws the
/// batch size and seed.
fn case(c: usize, h: usize, w: usize, body: Vec<String>) -> impl Strategy<Value = Case> {
    let spec = format!(
        "model m {{\n  input x: [{c}, {h}, {w}]\n{}}}\n",
        body.iter().map(|l| format!("  {l}\n")).collect::<String>()
    );
    (1..=3usize, any::<u64>()).prop_map(move |(batch, seed)| Case {
        spec: spec.clone(),
        batch,
        seed,
    })
}

fn input(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut r = Rng::new(seed);
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| r.uniform_in(-1.0, 1.0) as f32).collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

/// Seeded weights with every bias and batchnorm parameter drawn at random (`Weights::init`
/// zeroes biases and makes batchnorm the identity, which would leave those paths untested).
fn weights(g: &LayerGraph, seed: u64) -> Weights {
    let mut w = Weights::init(g, seed);
    let mut r = Rng::new(seed ^ 0x5151);
    for (p, v) in g.params.iter().zip(&mut w.values) {
        let Value::F32(a) = v else { continue };
        let (lo, hi) = match p.kind {
            ParamKind::Bias | ParamKind::RunningMean => (-1.0, 1.0),
            ParamKind::RunningVar => (0.2, 2.0),
            // 1-d weights are batchnorm's gamma (conv and dense weights have rank 2 or 4).
            ParamKind::Weight if p.shape.len() == 1 => (-2.0, 2.0),
            _ => continue,
        };
        a.mapv_inplace(|_| r.uniform_in(lo, hi) as f32);
    }
    w
}

/// `||a - b|| / ||b||`, where equal infinities (a max pool window entirely in padding gives
/// -inf, as in PyTorch) count as agreeing and are left out of the norms; any other non-finite
/// value gives NaN (a failure).
fn rel_err(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    let mut num = 0f64;
    let mut den = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        if x.is_infinite() && x == y {
            continue;
        }
        num += (x - y).powi(2);
        den += y.powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

/// The root mean square of `a - b` (with `rel_err`'s treatment of infinities).
fn rms_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    let mut num = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        if !(x.is_infinite() && x == y) {
            num += (x - y).powi(2);
        }
    }
    (num / a.len().max(1) as f64).sqrt()
}

fn to_f64(a: &ArrayD<f32>) -> ArrayD<f64> {
    a.mapv(f64::from)
}

/// The element where `got` and `want` differ most (NaN-aware), for failure messages.
fn worst(got: &ArrayD<f32>, want: &ArrayD<f32>) -> String {
    let flat = |a: &ArrayD<f32>| a.iter().copied().collect::<Vec<f32>>();
    let (g, w) = (flat(got), flat(want));
    let diff = |i: usize| {
        let d = (g[i] - w[i]).abs();
        if d.is_nan() && g[i].to_bits() != w[i].to_bits() {
            f32::INFINITY
        } else if d.is_nan() {
            0.0
        } else {
            d
        }
    };
    match (0..g.len()).max_by(|&a, &b| diff(a).total_cmp(&diff(b))) {
        Some(i) => format!(
            "worst at flat index {i} of {:?}: jit {} vs reference {}",
            want.shape(),
            g[i],
            w[i]
        ),
        None => "empty output".into(),
    }
}

/// Runs one case: `Ok(false)` when the spec does not elaborate (skipped).
fn check(case: &Case) -> Result<bool, TestCaseError> {
    let Ok(spec) = load_str("m.net", &case.spec, &Options::default()) else {
        return Ok(false);
    };
    let params = params_f32(&weights(&spec.graph, case.seed));
    let inp = &spec.graph.inputs[0];
    let mut shape = vec![case.batch];
    shape.extend(&inp.shape);
    let x = input(&shape, case.seed.wrapping_add(1));
    let prims = netc::lower::lower(&spec.graph, case.batch);
    let want = netc::reference::run::<f32>(&prims, &params, &[(inp.name.as_str(), x.clone())])
        .map_err(|e| TestCaseError::fail(format!("reference: {e}")))?;
    let mut truth: Option<Vec<ArrayD<f64>>> = None;
    for threads in [1, 2] {
        let opts = CompileOptions {
            batch: case.batch,
            threads,
            memory_limit: None,
        };
        let mut exe = compile(&spec, &params, opts)
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = exe
            .run(&[(inp.name.as_str(), &x)])
            .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        prop_assert_eq!(got.len(), want.len());
        for (i, ((name, g), w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g.shape(), w.shape(), "output {}", name);
            let e = rel_err(&to_f64(g), &to_f64(w));
            if e <= TOL {
                continue;
            }
            // Cancellation (a mean of values summing to almost zero) makes two f32 summation
            // orders differ by more than TOL relative to the small result. Then compare with
            // the f64 interpreter: the JIT passes if its error is that of rounding values of
            // the inputs' magnitude (about 1), or no larger than the f32 interpreter's.
            if truth.is_none() {
                let p64: Vec<ArrayD<f64>> = params.iter().map(to_f64).collect();
                let t =
                    netc::reference::run::<f64>(&prims, &p64, &[(inp.name.as_str(), to_f64(&x))])
                        .map_err(|e| TestCaseError::fail(format!("f64 reference: {e}")))?;
                truth = Some(t);
            }
            let t = &truth.as_ref().expect("computed above")[i];
            let (e_jit, e_ref) = (rel_err(&to_f64(g), t), rel_err(&to_f64(w), t));
            let rms = rms_diff(&to_f64(g), t);
            prop_assert!(
                e_jit <= TOL || rms <= ABS_TOL || e_jit <= 10.0 * e_ref,
                "{} thread(s), output {}: relative error {:e} to the f32 interpreter, {:e} to the \
                 f64 one (where the f32 interpreter has {:e}), RMS error {:e}; {}",
                threads,
                name,
                e,
                e_jit,
                e_ref,
                rms,
                worst(g, w)
            );
        }
    }
    Ok(true)
}

/// Runs `cases` random cases of `strategy`; panics with the shrunk spec on a mismatch.
fn run_cases(name: &str, cases: u32, strategy: impl Strategy<Value = Case>) {
    let seed = std::env::var("NETC_OPS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6E65_7463);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let ran = Cell::new(0u32);
    let result = runner.run(&strategy, |c| {
        if check(&c)? {
            ran.set(ran.get() + 1);
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, c)) => {
            panic!("{name}: {why}\nminimal failing case: {c:?}")
        }
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
    eprintln!("{name}: {} of {cases} random specs ran", ran.get());
    assert!(
        ran.get() * 2 >= cases,
        "{name}: only {} of {cases} random specs elaborated",
        ran.get()
    );
}

// ---------------------------------------------------------------------------------------------
// Attribute generators
// ---------------------------------------------------------------------------------------------

/// An int or an `[h, w]` pair with components in `lo..=hi`.
fn pair(lo: usize, hi: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("[{a}, {b}]")),
    ]
}

/// Convolution padding: ints, pairs, `same` and `valid`.
fn conv_pad() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => pair(0, 3),
        1 => Just("same".to_string()),
        1 => Just("valid".to_string()),
    ]
}

/// Groups for `c` input channels: 1, depthwise (`c`) or another divisor of `c`.
fn groups(c: usize, sel: usize, pick: usize) -> usize {
    match sel {
        0 => 1,
        1 => c,
        _ => {
            let divs: Vec<usize> = (1..=c).filter(|&d| c.is_multiple_of(d)).collect();
            divs[pick % divs.len()]
        }
    }
}

/// A float written so the spec grammar reads it back exactly enough.
fn num(v: f64) -> String {
    format!("{v:.6}")
}

/// An elementwise activation.
fn activation() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("relu".to_string()),
        Just("sigmoid".to_string()),
        Just("tanh".to_string()),
        Just("abs".to_string()),
        leaky_slope().prop_map(|s| format!("leaky_relu({s})")),
    ]
}

/// Leaky ReLU slopes, including negative ones and slopes above 1.
fn leaky_slope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0.01".to_string()),
        Just("slope=0.2".to_string()),
        (1.0..4.0f64).prop_map(|s| format!("slope={}", num(s))),
        (-1.0..1.0f64).prop_map(num),
        Just("1".to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Convolutions, with batchnorm, relu and a residual block after them
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ConvAttrs {
    kernel: String,
    stride: String,
    pad: String,
    dilation: String,
    gsel: usize,
    gpick: usize,
    omul: usize,
    bias: bool,
    bn: bool,
    /// An activation after the conv (and batchnorm).
    act: Option<String>,
}

fn conv_attrs(max_stride: usize, max_dilation: usize) -> impl Strategy<Value = ConvAttrs> {
    (
        pair(1, 5),
        pair(1, max_stride),
        conv_pad(),
        pair(1, max_dilation),
        (0..3usize, 0..8usize, 1..=7usize),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(activation()),
    )
        .prop_map(
            |(kernel, stride, pad, dilation, (gsel, gpick, omul), bias, bn, act)| ConvAttrs {
                kernel,
                stride,
                pad,
                dilation,
                gsel,
                gpick,
                omul,
                bias,
                bn,
                act,
            },
        )
}

/// The statements of a conv on `c` channels (then batchnorm and an activation when asked); returns them
/// and the output channels. `same_channels` keeps the channel count (for a residual body).
fn conv_lines(c: usize, a: &ConvAttrs, same_channels: bool) -> (Vec<String>, usize) {
    let g = groups(c, a.gsel, a.gpick);
    let o = if same_channels {
        c
    } else if g == 1 {
        a.omul
    } else {
        g * (1 + a.omul % 3)
    };
    let mut lines = vec![format!(
        "conv({o}, {}, stride={}, pad={}, dilation={}, groups={g}, bias={})",
        a.kernel, a.stride, a.pad, a.dilation, a.bias
    )];
    if a.bn {
        lines.push("batchnorm".into());
    }
    lines.extend(a.act.clone());
    (lines, o)
}

fn conv_case() -> impl Strategy<Value = Case> {
    (
        (1..=7usize, 1..=13usize, 1..=13usize),
        conv_attrs(3, 3),
        prop::option::weighted(0.4, (conv_attrs(1, 2), any::<bool>())),
    )
        .prop_flat_map(|((c, h, w), first, residual)| {
            let (mut body, o) = conv_lines(c, &first, false);
            if let Some((mut r, relu_after)) = residual {
                // Shape-preserving: stride 1, `same` padding, as many outputs as inputs.
                r.stride = "1".into();
                r.pad = "same".into();
                let (inner, _) = conv_lines(o, &r, true);
                body.push(format!("residual {{ {} }}", inner.join("; ")));
                if relu_after {
                    body.push("relu".into());
                }
            }
            case(c, h, w, body)
        })
}

#[test]
fn convolutions_match_the_reference() {
    run_cases("conv", 80, conv_case());
}

/// Found by `convolutions_match_the_reference`: a kernel column that only ever reads the left
/// padding of a narrow image (5x5 `same` on width 1) made im2col index before the row.
#[test]
fn conv_kernel_columns_entirely_in_padding() {
    let c = Case {
        spec: "model m {\n  input x: [2, 3, 1]\n  conv(2, 5, pad=same)\n}\n".into(),
        batch: 2,
        seed: 1,
    };
    assert!(check(&c).unwrap_or_else(|e| panic!("{e}\n{c:?}")));
}

/// Larger feature maps (up to 48x48): several im2col bands per image, and output rows split
/// across tasks when the batch is smaller than the thread count.
fn large_conv_case() -> impl Strategy<Value = Case> {
    (
        (1..=4usize, 20..=48usize, 20..=48usize),
        (pair(1, 3), pair(1, 2), pair(0, 2), pair(1, 2)),
        (0..3usize, 0..8usize, 1..=6usize),
        (any::<bool>(), any::<bool>(), prop::option::of(activation())),
    )
        .prop_flat_map(
            |((c, h, w), (kernel, stride, pad, dilation), (gsel, gpick, omul), (bias, bn, act))| {
                let a = ConvAttrs {
                    kernel,
                    stride,
                    pad,
                    dilation,
                    gsel,
                    gpick,
                    omul,
                    bias,
                    bn,
                    act,
                };
                case(c, h, w, conv_lines(c, &a, false).0)
            },
        )
}

#[test]
fn large_convolutions_match_the_reference() {
    run_cases("large conv", 40, large_conv_case());
}

/// 3×3 stride-1 convolutions with enough channels and output tiles for the Winograd form
/// (batch 1 splits tile ranges across threads, more images go one per task with the epilogue
/// fused), with batchnorm, activations and a residual block after them.
fn winograd_conv_case() -> impl Strategy<Value = Case> {
    (
        (16..=40usize, 20..=36usize, 12..=40usize, 16..=40usize),
        (pair(0, 2), any::<bool>(), any::<bool>()),
        (prop::option::of(activation()), any::<bool>()),
    )
        .prop_flat_map(|((c, h, w, o), (pad, bias, bn), (act, residual))| {
            let mut body = vec![format!("conv({o}, 3, pad={pad}, bias={bias})")];
            if bn {
                body.push("batchnorm".into());
            }
            body.extend(act);
            if residual {
                body.push(format!("residual {{ conv({o}, 3, pad=1); relu }}"));
            }
            case(c, h, w, body)
        })
}

#[test]
fn winograd_convolutions_match_the_reference() {
    run_cases("winograd conv", 24, winograd_conv_case());
}

/// Maps with enough 4×4 tiles for the F(4×4, 3×3) Winograd form: whole images per task with
/// the epilogue (batchnorm, ReLU, a residual block), odd sizes whose edge tiles hang over the
/// output, and a single image split into tile ranges.
#[test]
fn winograd_f4_convolutions_match_the_reference() {
    for (input, pad, batch) in [
        ("[16, 28, 28]", 1, 2),
        ("[17, 27, 30]", 1, 3),
        ("[16, 33, 34]", 0, 1),
        ("[20, 26, 29]", 2, 2),
    ] {
        let c = Case {
            spec: format!(
                "model m {{\n  input x: {input}\n  conv(24, 3, pad={pad})\n  batchnorm\n  relu\n  \
                 residual {{ conv(24, 3, pad=1); relu }}\n}}\n"
            ),
            batch,
            seed: 5,
        };
        assert!(check(&c).unwrap_or_else(|e| panic!("{e}\n{c:?}")));
    }
}

/// A constant weight's Winograd transform is made on the first run and reused: a second run
/// on another input still matches the reference (both forms, whole images and tile ranges).
#[test]
fn winograd_transformed_weights_are_reused_across_runs() {
    let src = "model m {\n  input x: [16, 28, 28]\n  conv(24, 3, pad=1)\n  relu\n  \
               conv(20, 3, pad=1)\n}\n";
    let spec = load_str("m.net", src, &Options::default()).unwrap();
    let params = params_f32(&weights(&spec.graph, 7));
    for batch in [1, 2] {
        let prims = netc::lower::lower(&spec.graph, batch);
        let opts = CompileOptions {
            batch,
            threads: 2,
            memory_limit: None,
        };
        let mut exe = compile(&spec, &params, opts).unwrap();
        for seed in [11, 12, 13] {
            let x = input(&[batch, 16, 28, 28], seed);
            let want = netc::reference::run::<f32>(&prims, &params, &[("x", x.clone())]).unwrap();
            let got = exe.run(&[("x", &x)]).unwrap();
            let e = rel_err(&to_f64(&got[0].1), &to_f64(&want[0]));
            assert!(e <= TOL, "batch {batch}, input {seed}: relative error {e}");
        }
    }
}

/// Small maps, many images: the Winograd form's tasks take several whole images each (a
/// block of tiles spans images) and run the epilogue on all of them.
#[test]
fn winograd_tasks_of_several_images() {
    let c = Case {
        spec: "model m {\n  input x: [16, 12, 12]\n  conv(17, 3, pad=1)\n  batchnorm\n  relu\n  \
               residual { conv(17, 3, pad=1); relu }\n}\n"
            .into(),
        batch: 7,
        seed: 3,
    };
    assert!(check(&c).unwrap_or_else(|e| panic!("{e}\n{c:?}")));
}

// ---------------------------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------------------------

fn pool_case() -> impl Strategy<Value = Case> {
    (
        (1..=4usize, 1..=13usize, 1..=13usize),
        any::<bool>(),
        (1..=5usize, 1..=5usize, any::<bool>()),
        prop::option::of((1..=3usize, 1..=3usize)),
        (0..=2usize, 0..=2usize),
        (any::<bool>(), any::<bool>(), 1..=2usize),
        prop::option::of(activation()),
    )
        .prop_flat_map(
            |((c, h, w), max, (kh, kw, square), stride, (ph, pw), (ceil, cip, dil), act)| {
                let kw = if square { kh } else { kw };
                let kernel = if square {
                    kh.to_string()
                } else {
                    format!("[{kh}, {kw}]")
                };
                let mut args = vec![kernel];
                if let Some((sh, sw)) = stride {
                    args.push(format!("stride=[{sh}, {sw}]"));
                }
                // PyTorch's rule: padding at most half the kernel.
                args.push(format!("pad=[{}, {}]", ph.min(kh / 2), pw.min(kw / 2)));
                args.push(format!("ceil={ceil}"));
                let layer = if max {
                    if dil > 1 {
                        args.push(format!("dilation={dil}"));
                    }
                    "maxpool"
                } else {
                    args.push(format!("count_include_pad={cip}"));
                    "avgpool"
                };
                let mut body = Vec::new();
                // Sometimes an elementwise op before the pool (the window kernel's input is
                // then computed by another kernel).
                if let Some(a) = &act {
                    body.push(a.clone());
                }
                body.push(format!("{layer}({})", args.join(", ")));
                case(c, h, w, body)
            },
        )
}

#[test]
fn pooling_matches_the_reference() {
    run_cases("pool", 80, pool_case());
}

fn adaptive_case() -> impl Strategy<Value = Case> {
    (
        (1..=4usize, 1..=13usize, 1..=13usize),
        prop_oneof![
            Just(None),
            (1..=8usize).prop_map(|o| Some(o.to_string())),
            (1..=8usize, 1..=8usize).prop_map(|(a, b)| Some(format!("[{a}, {b}]"))),
        ],
        0..3usize,
    )
        .prop_flat_map(|((c, h, w), out, after)| {
            let mut body = vec![match out {
                Some(o) => format!("adaptive_avgpool({o})"),
                None => "global_avgpool".to_string(),
            }];
            match after {
                1 => body.push("relu".into()),
                2 => body.push("flatten; dense(5)".into()),
                _ => {}
            }
            case(c, h, w, body)
        })
}

#[test]
fn adaptive_and_global_pooling_match_the_reference() {
    run_cases("adaptive_avgpool", 60, adaptive_case());
}

// ---------------------------------------------------------------------------------------------
// Dense layers, softmax, activations and normalizations
// ---------------------------------------------------------------------------------------------

fn dense_case() -> impl Strategy<Value = Case> {
    (
        (1..=5usize, 1..=6usize, 1..=6usize),
        any::<bool>(),
        (1..=12usize, any::<bool>(), any::<bool>()),
        prop::option::of(activation()),
        prop::option::of((1..=10usize, any::<bool>())),
        any::<bool>(),
    )
        .prop_flat_map(|((c, h, w), gap, (o, bias, bn), act, second, softmax)| {
            let mut body = Vec::new();
            if gap {
                body.push("global_avgpool".to_string());
            }
            body.push("flatten".into());
            body.push(format!("dense({o}, bias={bias})"));
            if bn {
                body.push("batchnorm".into());
            }
            if let Some(a) = act {
                body.push(a);
            }
            if let Some((o2, b2)) = second {
                body.push(format!("dense({o2}, bias={b2})"));
            }
            if softmax {
                body.push("softmax".into());
            }
            case(c, h, w, body)
        })
}

#[test]
fn dense_layers_match_the_reference() {
    run_cases("dense", 60, dense_case());
}

/// One to three of: activations, softmax, l2_normalize, on an image or a flattened vector.
fn pointwise_case() -> impl Strategy<Value = Case> {
    let op = prop_oneof![
        3 => activation(),
        1 => Just("softmax".to_string()),
        1 => Just("batchnorm".to_string()),
        1 => prop_oneof![Just(1e-12f64), 0.0..2.0f64]
            .prop_map(|e| format!("l2_normalize(eps={})", if e < 1e-6 { "1e-12".into() } else { num(e) })),
    ];
    (
        (1..=7usize, 1..=9usize, 1..=9usize),
        any::<bool>(),
        prop::collection::vec(op, 1..=3),
    )
        .prop_flat_map(|((c, h, w), flat, ops)| {
            let mut body = Vec::new();
            if flat {
                body.push("flatten".to_string());
            }
            body.extend(ops);
            case(c, h, w, body)
        })
}

#[test]
fn activations_softmax_and_l2_normalize_match_the_reference() {
    run_cases("pointwise", 80, pointwise_case());
}

fn lrn_case() -> impl Strategy<Value = Case> {
    (
        (1..=7usize, 1..=6usize, 1..=6usize),
        1..=7usize,
        (1e-4..2.0f64, 0.25..1.5f64, 0.5..2.0f64),
        any::<bool>(),
    )
        .prop_flat_map(|((c, h, w), size, (alpha, beta, k), relu)| {
            let mut body = Vec::new();
            if relu {
                body.push("relu".to_string());
            }
            body.push(format!(
                "lrn({size}, alpha={}, beta={}, k={})",
                num(alpha),
                num(beta),
                num(k)
            ));
            case(c, h, w, body)
        })
}

#[test]
fn lrn_matches_the_reference() {
    run_cases("lrn", 60, lrn_case());
}

fn gram_case() -> impl Strategy<Value = Case> {
    (
        (1..=7usize, 1..=9usize, 1..=9usize),
        prop::option::of((1..=6usize, 1..=3usize)),
    )
        .prop_flat_map(|((c, h, w), conv)| {
            let mut body = Vec::new();
            if let Some((o, k)) = conv {
                body.push(format!("conv({o}, {k}, pad=same)"));
                body.push("relu".to_string());
            }
            body.push("gram".into());
            case(c, h, w, body)
        })
}

#[test]
fn gram_matches_the_reference() {
    run_cases("gram", 50, gram_case());
}

// ---------------------------------------------------------------------------------------------
// Concatenated branches
// ---------------------------------------------------------------------------------------------

/// A branch that maps `[c, h, w]` to `[*, ceil(h / s), ceil(w / s)]`.
fn branch(stride: usize) -> impl Strategy<Value = String> {
    let s = stride;
    prop_oneof![
        (1..=5usize, 1..=4usize, any::<bool>()).prop_map(move |(o, k, bias)| format!(
            "conv({o}, {k}, stride={s}, pad=same, bias={bias})"
        )),
        (1..=5usize, any::<bool>()).prop_map(move |(o, relu)| format!(
            "seq {{ conv({o}, 1, stride={s}){} }}",
            if relu { "; batchnorm; relu" } else { "" }
        )),
        Just(format!("maxpool(3, stride={s}, pad=1)")),
        any::<bool>()
            .prop_map(move |cip| format!("avgpool(3, stride={s}, pad=1, count_include_pad={cip})")),
        Just(if s == 1 {
            "identity".to_string()
        } else {
            format!("maxpool(1, stride={s})")
        }),
    ]
}

fn concat_case() -> impl Strategy<Value = Case> {
    (
        (1..=5usize, 1..=11usize, 1..=11usize),
        1..=2usize,
        0..3usize,
    )
        .prop_flat_map(|((c, h, w), s, after)| {
            (
                Just((c, h, w, after)),
                prop::collection::vec(branch(s), 2..=4),
            )
        })
        .prop_flat_map(|((c, h, w, after), branches)| {
            let named: Vec<String> = branches
                .iter()
                .enumerate()
                .map(|(i, b)| format!("b{i}: {b}"))
                .collect();
            let mut body = vec![format!("concat {{ {} }}", named.join("; "))];
            match after {
                1 => body.push("relu".into()),
                2 => body.push("conv(3, 3, pad=1)".into()),
                _ => {}
            }
            case(c, h, w, body)
        })
}

#[test]
fn concatenated_branches_match_the_reference() {
    run_cases("concat", 60, concat_case());
}
