//! The reference interpreter (`netc::reference`) against PyTorch, against itself (property
//! tests of internal consistency), and end to end on the reference models.
//!
//! PyTorch's numbers are in `tests/data/reference/` (copied from the shared reference data;
//! `make_reference.py` there is the script that wrote them). Run with `--nocapture` to see the
//! measured errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use netc::graph::{BinaryOp, Graph, Op, PoolOp, ReduceOp, UnaryOp};
use netc::reference::{self, Real, eval_node};
use netc::{Options, load_file, load_str};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use safetensors::{Dtype, SafeTensors};

// ---------------------------------------------------------------------------------------------
// Helpers: data files, conversions, errors
// ---------------------------------------------------------------------------------------------

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

/// The f32 tensors of a safetensors file, by name (other dtypes are left out).
fn load_safetensors(path: &Path) -> HashMap<String, ArrayD<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let a = ArrayD::from_shape_vec(IxDyn(view.shape()), values).unwrap();
        out.insert(name, a);
    }
    out
}

/// A little-endian float32, C-order `.npy` file (format versions 1 to 3).
fn load_npy_f32(path: &Path) -> ArrayD<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let dims = &header[header.find('(').unwrap() + 1..header.find(')').unwrap()];
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let values: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap()
}

fn to<T: Real>(a: &ArrayD<f32>) -> ArrayD<T> {
    a.mapv(T::from_f32)
}

/// ‖a − b‖ / ‖b‖ (Frobenius norms), in f64.
fn rel_err<A: Real, B: Real>(a: &ArrayD<A>, b: &ArrayD<B>) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b.iter()) {
        let (x, y) = (x.to_f64(), y.to_f64());
        num += (x - y) * (x - y);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn spec_graph(src: &str) -> netc::layer_graph::LayerGraph {
    load_str("case.net", src, &Options::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

// ---------------------------------------------------------------------------------------------
// 1. Single ops against PyTorch
// ---------------------------------------------------------------------------------------------

/// Runs PyTorch case `case` (file `ops/<case>.safetensors`) through the one-layer spec `src`,
/// lowered with the batch size of `in0`. The case's inputs `in0, in1, ..` are the spec's
/// inputs (in order), then its parameters (in order). `post` maps our output to PyTorch's
/// (e.g. a mean over the batch). Checks f32 to 1e-5 and returns (f32 error, f64 error).
fn torch_case(case: &str, src: &str, post: fn(ArrayD<f64>) -> ArrayD<f64>) -> (f64, f64) {
    let t = load_safetensors(&data_dir().join(format!("ops/{case}.safetensors")));
    let lg = spec_graph(src);
    let batch = t["in0"].shape()[0];
    let g = netc::lower::lower(&lg, batch);
    let n_in = lg.inputs.len();
    assert_eq!(
        lg.params.len() + n_in,
        t.keys().filter(|k| k.starts_with("in")).count()
    );
    let expected = &t["out"];

    fn go<T: Real>(
        g: &Graph,
        lg: &netc::layer_graph::LayerGraph,
        t: &HashMap<String, ArrayD<f32>>,
    ) -> ArrayD<T> {
        let n_in = lg.inputs.len();
        let inputs: Vec<(&str, ArrayD<T>)> = lg
            .inputs
            .iter()
            .enumerate()
            .map(|(i, info)| (info.name.as_str(), to::<T>(&t[&format!("in{i}")])))
            .collect();
        let params: Vec<ArrayD<T>> = (0..lg.params.len())
            .map(|i| to::<T>(&t[&format!("in{}", n_in + i)]))
            .collect();
        let mut out = reference::run(g, &params, &inputs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), 1);
        out.remove(0)
    }
    let y32 = go::<f32>(&g, &lg, &t);
    let y64 = go::<f64>(&g, &lg, &t);
    let y32 = post(y32.mapv(f64::from));
    let y64 = post(y64);
    let (e32, e64) = (rel_err(&y32, expected), rel_err(&y64, expected));
    println!("{case:<20} f32 rel err {e32:.2e}   f64 rel err {e64:.2e}");
    assert!(e32 <= 1e-5, "{case}: f32 relative error {e32:e}");
    assert!(e64 <= 1e-5, "{case}: f64 relative error {e64:e}");
    (e32, e64)
}

fn same(x: ArrayD<f64>) -> ArrayD<f64> {
    x
}

#[test]
fn torch_conv2d_s2_p1() {
    // F.conv2d(x, w, b, stride=2, padding=1): conv, then bias reshaped [1, O, 1, 1] and added.
    torch_case(
        "conv2d_s2_p1",
        "model t { input x: [3, 11, 9]\n c: conv(5, 3, stride=2, pad=1) }",
        same,
    );
}

#[test]
fn torch_conv2d_dil2_g2() {
    torch_case(
        "conv2d_dil2_g2",
        "model t { input x: [4, 10, 10]\n c: conv(6, 3, pad=2, dilation=2, groups=2, bias=false) }",
        same,
    );
}

#[test]
fn torch_conv2d_depthwise() {
    torch_case(
        "conv2d_depthwise",
        "model t { input x: [6, 7, 7]\n c: conv(6, 3, pad=1, groups=6, bias=false) }",
        same,
    );
}

#[test]
fn torch_maxpool3_s2_ceil() {
    torch_case(
        "maxpool3_s2_ceil",
        "model t { input x: [3, 10, 10]\n maxpool(3, stride=2, ceil=true) }",
        same,
    );
}

#[test]
fn torch_avgpool3_s2_p1() {
    torch_case(
        "avgpool3_s2_p1",
        "model t { input x: [3, 9, 9]\n avgpool(3, stride=2, pad=1) }",
        same,
    );
}

#[test]
fn torch_adaptive_avgpool_6() {
    torch_case(
        "adaptive_avgpool_6",
        "model t { input x: [2, 13, 13]\n adaptive_avgpool(6) }",
        same,
    );
}

#[test]
fn torch_lrn5() {
    torch_case(
        "lrn5",
        "model t { input x: [8, 5, 5]\n lrn(5, alpha=0.0001, beta=0.75, k=2) }",
        same,
    );
}

#[test]
fn torch_softmax_dim1() {
    torch_case("softmax_dim1", "model t { input x: [7]\n softmax }", same);
}

#[test]
fn torch_gram() {
    torch_case("gram", "model t { input x: [5, 6, 7]\n gram }", same);
}

#[test]
fn torch_triplet_margin() {
    // PyTorch's reduction is the mean over the batch; ours is per sample, [N, 1].
    fn mean(x: ArrayD<f64>) -> ArrayD<f64> {
        ArrayD::from_elem(IxDyn(&[]), x.mean().unwrap())
    }
    torch_case(
        "triplet_margin",
        "model t {\n input a: [16]\n input p: [16]\n input n: [16]\n \
         loss = triplet_loss(a, p, n, margin=0.2)\n output loss\n}",
        mean,
    );
}

/// The same cases through `eval_node` on hand-built ops (no spec, no lowering).
#[test]
fn torch_cases_through_eval_node() {
    let conv = |case: &str, padding: usize, dilation: usize, groups: usize| {
        let t = load_safetensors(&data_dir().join(format!("ops/{case}.safetensors")));
        let op = Op::Conv2d {
            stride: [1, 1],
            padding: [padding; 4],
            dilation: [dilation; 2],
            groups,
        };
        let out = &t["out"];
        let y = eval_node(&op, &[&t["in0"], &t["in1"]], out.shape());
        let y64 = eval_node(&op, &[&to::<f64>(&t["in0"]), &to(&t["in1"])], out.shape());
        assert!(rel_err(&y, out) <= 1e-5, "{case}");
        assert!(rel_err(&y64, out) <= 1e-5, "{case}");
    };
    conv("conv2d_dil2_g2", 2, 2, 2);
    conv("conv2d_depthwise", 1, 1, 6);

    let t = load_safetensors(&data_dir().join("ops/avgpool3_s2_p1.safetensors"));
    let op = Op::Pool {
        op: PoolOp::Avg {
            count_include_pad: true,
        },
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1; 4],
        dilation: [1, 1],
        ceil_mode: false,
    };
    let y = eval_node(&op, &[&t["in0"]], t["out"].shape());
    assert!(rel_err(&y, &t["out"]) <= 1e-5);
}

// ---------------------------------------------------------------------------------------------
// Hand-computed small cases (semantics that PyTorch data above does not pin down)
// ---------------------------------------------------------------------------------------------

fn arr(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
}

#[test]
fn avg_pool_divisors_in_ceil_mode() {
    // One row x = 1..=6; kernel 3, stride 2, padding 1 left and right. Floor mode has 3
    // windows, ceil mode 4: starts -1, 1, 3, 5.
    let x = arr(&[1, 1, 1, 6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let pool = |cip, ceil| Op::Pool {
        op: PoolOp::Avg {
            count_include_pad: cip,
        },
        kernel: [1, 3],
        stride: [1, 2],
        padding: [0, 0, 1, 1],
        dilation: [1, 1],
        ceil_mode: ceil,
    };
    assert_eq!(netc::graph::pool_out(6, [1, 1], 3, 2, 1, false), 3);
    assert_eq!(netc::graph::pool_out(6, [1, 1], 3, 2, 1, true), 4);
    // Window [-1, 2): the padding cell counts with count_include_pad (3 / 3), not without
    // (3 / 2). The ceil-mode window [5, 8) holds input cell 5, right-padding cell 6 (counted
    // with count_include_pad) and cell 7 past the padding (never counted): 6 / 2 or 6 / 1.
    let y = eval_node(&pool(true, true), &[&x], &[1, 1, 1, 4]);
    assert_eq!(y, arr(&[1, 1, 1, 4], &[1.0, 3.0, 5.0, 3.0]));
    let y = eval_node(&pool(false, true), &[&x], &[1, 1, 1, 4]);
    assert_eq!(y, arr(&[1, 1, 1, 4], &[1.5, 3.0, 5.0, 6.0]));
    let y = eval_node(&pool(true, false), &[&x], &[1, 1, 1, 3]);
    assert_eq!(y, arr(&[1, 1, 1, 3], &[1.0, 3.0, 5.0]));
    // No padding: the ceil-mode window [4, 7) holds 2 cells and divides by 2 either way.
    let op = Op::Pool {
        op: PoolOp::Avg {
            count_include_pad: true,
        },
        kernel: [1, 3],
        stride: [1, 2],
        padding: [0; 4],
        dilation: [1, 1],
        ceil_mode: true,
    };
    let y = eval_node(&op, &[&x], &[1, 1, 1, 3]);
    assert_eq!(y, arr(&[1, 1, 1, 3], &[2.0, 4.0, 5.5]));
}

#[test]
fn max_pool_padding_is_never_selected() {
    let x = arr(&[1, 1, 2, 2], &[-5.0, -6.0, -7.0, -8.0]);
    let op = Op::Pool {
        op: PoolOp::Max,
        kernel: [2, 2],
        stride: [1, 1],
        padding: [1; 4],
        dilation: [1, 1],
        ceil_mode: false,
    };
    let y = eval_node(&op, &[&x], &[1, 1, 3, 3]);
    let want = [-5.0, -5.0, -6.0, -5.0, -5.0, -6.0, -7.0, -7.0, -8.0];
    assert_eq!(y, arr(&[1, 1, 3, 3], &want));
}

/// NaN is never dropped, as in PyTorch (CPU): `torch.maximum`/`torch.minimum` give NaN if
/// either operand is NaN, `torch.relu` (`clamp_min(x, 0)`, `std::max(x, 0)` per element) keeps
/// NaN and -0, `amax` of a row with a NaN is NaN, and `max_pool2d` outputs NaN for a window
/// with a NaN and routes its gradient to the window's *last* NaN (`max_pool2d_with_indices`
/// takes a tap when `val > maxval || isnan(val)`).
#[test]
fn nan_propagates_as_in_pytorch() {
    let nan = f64::NAN;
    let same = |got: &ArrayD<f64>, want: &[f64]| {
        let ok = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()));
        assert!(ok, "got {got:?}, want {want:?}");
    };
    let a = arr(&[5], &[nan, 1.0, -1.0, nan, 3.0]);
    let b = arr(&[5], &[0.0, nan, 2.0, nan, -3.0]);
    let y = eval_node(&Op::Binary(BinaryOp::Max), &[&a, &b], &[5]);
    same(&y, &[nan, nan, 2.0, nan, 3.0]);
    let y = eval_node(&Op::Binary(BinaryOp::Min), &[&a, &b], &[5]);
    same(&y, &[nan, nan, -1.0, nan, -3.0]);
    let x = arr(&[5], &[nan, -1.0, -0.0, 2.0, f64::NEG_INFINITY]);
    let y = eval_node(&Op::Unary(UnaryOp::Relu), &[&x], &[5]);
    same(&y, &[nan, 0.0, -0.0, 2.0, 0.0]);
    let r = arr(&[2, 3], &[1.0, nan, 3.0, 4.0, 2.0, 6.0]);
    let op = Op::Reduce {
        op: ReduceOp::Max,
        axes: vec![1],
    };
    same(&eval_node(&op, &[&r], &[2, 1]), &[nan, 6.0]);
    // Windows of 3 at stride 3: (NaN, 5, NaN) and (0, 7, 1).
    let x = arr(&[1, 1, 1, 6], &[nan, 5.0, nan, 0.0, 7.0, 1.0]);
    let window = (PoolOp::Max, [1, 3], [1, 3], [0; 4], [1, 1], false);
    let pool = Op::Pool {
        op: window.0,
        kernel: window.1,
        stride: window.2,
        padding: window.3,
        dilation: window.4,
        ceil_mode: window.5,
    };
    same(&eval_node(&pool, &[&x], &[1, 1, 1, 2]), &[nan, 7.0]);
    let grad = Op::PoolBackward {
        op: window.0,
        kernel: window.1,
        stride: window.2,
        padding: window.3,
        dilation: window.4,
        ceil_mode: window.5,
    };
    let dy = arr(&[1, 1, 1, 2], &[1.0, 10.0]);
    same(
        &eval_node(&grad, &[&x, &dy], &[1, 1, 1, 6]),
        &[0.0, 0.0, 1.0, 0.0, 10.0, 0.0],
    );
}

#[test]
fn small_ops_by_hand() {
    // Binary broadcasting: [2, 1] + [3] -> [2, 3].
    let a = arr(&[2, 1], &[10.0, 20.0]);
    let b = arr(&[3], &[1.0, 2.0, 3.0]);
    let y = eval_node(&Op::Binary(BinaryOp::Add), &[&a, &b], &[2, 3]);
    assert_eq!(y, arr(&[2, 3], &[11.0, 12.0, 13.0, 21.0, 22.0, 23.0]));
    // Scalar broadcasting and Pow.
    let s = eval_node::<f64>(&Op::Scalar { value: 2.0 }, &[], &[]);
    let y = eval_node(&Op::Binary(BinaryOp::Pow), &[&b, &s], &[3]);
    assert_eq!(y, arr(&[3], &[1.0, 4.0, 9.0]));
    // Select broadcasts all three.
    let c = arr(&[2, 1], &[1.0, 0.0]);
    let y = eval_node(&Op::Select, &[&c, &b, &s], &[2, 3]);
    assert_eq!(y, arr(&[2, 3], &[1.0, 2.0, 3.0, 2.0, 2.0, 2.0]));
    // Reduce keeps dims.
    let x = arr(&[2, 3], &[1.0, 5.0, 3.0, 4.0, 2.0, 6.0]);
    let r =
        |op, axes: Vec<usize>, shape: &[usize]| eval_node(&Op::Reduce { op, axes }, &[&x], shape);
    assert_eq!(
        r(ReduceOp::Sum, vec![1], &[2, 1]),
        arr(&[2, 1], &[9.0, 12.0])
    );
    assert_eq!(
        r(ReduceOp::Max, vec![0], &[1, 3]),
        arr(&[1, 3], &[4.0, 5.0, 6.0])
    );
    assert_eq!(r(ReduceOp::Mean, vec![0, 1], &[1, 1]), arr(&[1, 1], &[3.5]));
    // MatMul with a batch dimension and transpose_b.
    let a = arr(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = arr(&[2, 2, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0]);
    let y = eval_node(&Op::MatMul { transpose_b: false }, &[&a, &b], &[2, 1, 2]);
    assert_eq!(y, arr(&[2, 1, 2], &[1.0, 2.0, 11.0, 3.0]));
    let y = eval_node(&Op::MatMul { transpose_b: true }, &[&a, &b], &[2, 1, 2]);
    assert_eq!(y, arr(&[2, 1, 2], &[1.0, 2.0, 7.0, 6.0]));
    // Permute, slice, concat.
    let y = eval_node(&Op::Permute { perm: vec![1, 0] }, &[&x], &[3, 2]);
    assert_eq!(y, arr(&[3, 2], &[1.0, 4.0, 5.0, 2.0, 3.0, 6.0]));
    let op = Op::Slice {
        axis: 1,
        start: 1,
        end: 3,
    };
    let y = eval_node(&op, &[&x], &[2, 2]);
    assert_eq!(y, arr(&[2, 2], &[5.0, 3.0, 2.0, 6.0]));
    let y = eval_node(&Op::Concat { axis: 1 }, &[&x, &y], &[2, 5]);
    let want = [1.0, 5.0, 3.0, 5.0, 3.0, 4.0, 2.0, 6.0, 2.0, 6.0];
    assert_eq!(y, arr(&[2, 5], &want));
    // Adaptive pooling windows overlap when the output does not divide the input: 5 -> 3
    // gives rows 0..2, 1..4, 3..5.
    let x = arr(&[1, 1, 5, 1], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let y = eval_node(
        &Op::AdaptiveAvgPool { output: [3, 1] },
        &[&x],
        &[1, 1, 3, 1],
    );
    assert_eq!(y, arr(&[1, 1, 3, 1], &[1.5, 3.0, 4.5]));
}

#[test]
fn random_mask_is_deterministic_and_roughly_fair() {
    let x = ArrayD::<f32>::zeros(IxDyn(&[100, 100]));
    let op = Op::RandomMask { p: 0.3, seed: 42 };
    let a = eval_node(&op, &[&x], &[100, 100]);
    let b = eval_node(&op, &[&x], &[100, 100]);
    assert_eq!(a, b);
    let a64 = eval_node(&op, &[&x.mapv(f64::from)], &[100, 100]);
    assert_eq!(a.mapv(f64::from), a64);
    let kept = a.sum() / 10_000.0;
    assert!((kept - 0.7).abs() < 0.02, "kept {kept}");
    let c = eval_node(&Op::RandomMask { p: 0.3, seed: 43 }, &[&x], &[100, 100]);
    assert_ne!(a, c);
    let all = eval_node(&Op::RandomMask { p: 0.0, seed: 1 }, &[&x], &[100, 100]);
    assert!(all.iter().all(|&v| v == 1.0));
    let none = eval_node(&Op::RandomMask { p: 1.0, seed: 1 }, &[&x], &[100, 100]);
    assert!(none.iter().all(|&v| v == 0.0));
}

#[test]
fn run_reports_bad_inputs_and_params() {
    let lg = spec_graph("model t { input x: [3, 8, 8]\n c: conv(4, 3) }");
    let g = netc::lower::lower(&lg, 2);
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 8, 8]));
    let w = ArrayD::<f32>::zeros(IxDyn(&[4, 3, 3, 3]));
    let b = ArrayD::<f32>::zeros(IxDyn(&[4]));
    let ok = reference::run(&g, &[w.clone(), b.clone()], &[("x", x.clone())]);
    assert_eq!(ok.unwrap()[0].shape(), &[2, 4, 6, 6]);
    let err = |r: Result<Vec<ArrayD<f32>>, String>| r.unwrap_err();
    let e = err(reference::run(&g, &[w.clone(), b.clone()], &[]));
    assert!(e.contains("no value given for the input `x`"), "{e}");
    let e = err(reference::run(
        &g,
        &[w.clone(), b.clone()],
        &[("y", x.clone())],
    ));
    assert!(e.contains("no input `y`"), "{e}");
    let e = err(reference::run(
        &g,
        &[w.clone(), b.clone()],
        &[("x", w.clone())],
    ));
    assert!(e.contains("has shape [4, 3, 3, 3]"), "{e}");
    let e = err(reference::run(
        &g,
        std::slice::from_ref(&w),
        &[("x", x.clone())],
    ));
    assert!(e.contains("parameter 1 is missing"), "{e}");
    let e = err(reference::run(&g, &[b.clone(), b], &[("x", x)]));
    assert!(e.contains("parameter 0 has shape [4]"), "{e}");
    // A malformed graph is an error, not a panic.
    let mut bad = Graph::default();
    let i = bad.push(Op::Input { name: "x".into() }, vec![], vec![2, 3], "");
    bad.push(
        Op::MatMul { transpose_b: false },
        vec![i, i],
        vec![2, 3],
        "",
    );
    bad.outputs.push(("y".into(), 1));
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
    let e = err(reference::run(&bad, &[], &[("x", x)]));
    assert!(e.contains("inner dimensions differ"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 2. Property tests: internal consistency
// ---------------------------------------------------------------------------------------------

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64), so that cases stay small to
/// describe: a shape and a seed.
fn random(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    let values = (0..n as u64)
        .map(|i| {
            let z = netc::reference::ops::splitmix64(seed, i);
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>, tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.shape(), b.shape());
    let e = rel_err(a, b);
    prop_assert!(e <= tol, "relative error {} > {}", e, tol);
    Ok(())
}

fn conv_shape(x: &[usize], w: &[usize], s: [usize; 2], p: [usize; 4], d: [usize; 2]) -> Vec<usize> {
    let out =
        |n: usize, pad: usize, k: usize, s: usize, d: usize| (n + pad - d * (k - 1) - 1) / s + 1;
    vec![
        x[0],
        w[0],
        out(x[2], p[0] + p[1], w[2], s[0], d[0]),
        out(x[3], p[2] + p[3], w[3], s[1], d[1]),
    ]
}

#[derive(Debug, Clone)]
struct ConvCase {
    n: usize,
    groups: usize,
    c_per_group: usize,
    o_per_group: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    seed: u64,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1..3usize, 1..4usize, 1..4usize, 1..4usize),
        (1..10usize, 1..10usize, 1..4usize, 1..4usize),
        (
            [1..3usize, 1..3usize],
            [0..3usize, 0..3usize, 0..3usize, 0..3usize],
        ),
        ([1..3usize, 1..3usize], any::<u64>()),
    )
        .prop_map(
            |((n, groups, cg, og), (h, w, kh, kw), (stride, padding), (dilation, seed))| ConvCase {
                n,
                groups,
                c_per_group: cg,
                o_per_group: og,
                h,
                w,
                k: [kh, kw],
                stride,
                padding,
                dilation,
                seed,
            },
        )
        .prop_filter("the kernel fits the padded input", |c| {
            c.dilation[0] * (c.k[0] - 1) < c.h + c.padding[0] + c.padding[1]
                && c.dilation[1] * (c.k[1] - 1) < c.w + c.padding[2] + c.padding[3]
        })
}

proptest! {
    #![proptest_config(config(48))]

    /// A grouped conv is the concatenation (over output channels) of one conv per group on
    /// that group's input channels and weights.
    #[test]
    fn grouped_conv_is_concat_of_per_group_convs(c in conv_case()) {
        let (g, cg, og) = (c.groups, c.c_per_group, c.o_per_group);
        let x = random(&[c.n, g * cg, c.h, c.w], c.seed);
        let w = random(&[g * og, cg, c.k[0], c.k[1]], c.seed ^ 1);
        let out = conv_shape(x.shape(), w.shape(), c.stride, c.padding, c.dilation);
        let conv = |groups| Op::Conv2d { stride: c.stride, padding: c.padding, dilation: c.dilation, groups };
        let whole = eval_node(&conv(g), &[&x, &w], &out);
        let parts: Vec<ArrayD<f64>> = (0..g)
            .map(|i| {
                let xs = eval_node(&Op::Slice { axis: 1, start: i * cg, end: (i + 1) * cg }, &[&x], &[c.n, cg, c.h, c.w]);
                let ws = eval_node(&Op::Slice { axis: 0, start: i * og, end: (i + 1) * og }, &[&w], &[og, cg, c.k[0], c.k[1]]);
                let mut o = out.clone();
                o[1] = og;
                eval_node(&conv(1), &[&xs, &ws], &o)
            })
            .collect();
        let refs: Vec<&ArrayD<f64>> = parts.iter().collect();
        let joined = eval_node(&Op::Concat { axis: 1 }, &refs, &out);
        close(&whole, &joined, 1e-14)?;
    }

    /// A 1x1 conv with stride 1 and no padding is a matmul over the channel dimension:
    /// x[N, C, H, W] → [N·H·W, C] @ w[O, C]ᵀ → [N, O, H, W].
    #[test]
    fn conv_1x1_is_matmul(n in 1..3usize, c in 1..6usize, o in 1..6usize, h in 1..6usize, w in 1..6usize, seed: u64) {
        let x = random(&[n, c, h, w], seed);
        let wt = random(&[o, c, 1, 1], seed ^ 7);
        let conv = Op::Conv2d { stride: [1, 1], padding: [0; 4], dilation: [1, 1], groups: 1 };
        let y = eval_node(&conv, &[&x, &wt], &[n, o, h, w]);
        let xt = eval_node(&Op::Permute { perm: vec![0, 2, 3, 1] }, &[&x], &[n, h, w, c]);
        let x2 = eval_node(&Op::Reshape, &[&xt], &[n * h * w, c]);
        let w2 = eval_node(&Op::Reshape, &[&wt], &[o, c]);
        let m = eval_node(&Op::MatMul { transpose_b: true }, &[&x2, &w2], &[n * h * w, o]);
        let m = eval_node(&Op::Reshape, &[&m], &[n, h, w, o]);
        let m = eval_node(&Op::Permute { perm: vec![0, 3, 1, 2] }, &[&m], &[n, o, h, w]);
        close(&y, &m, 1e-14)?;
    }

    /// Max pooling of a constant is that constant, with any padding up to half the kernel
    /// (PyTorch's limit), stride and ceil mode: padding is never selected.
    /// Average pooling without count_include_pad likewise.
    #[test]
    fn pooling_a_constant_gives_the_constant(
        h in 1..9usize, w in 1..9usize, kh in 1..4usize, kw in 1..4usize,
        sh in 1..4usize, sw in 1..4usize, pads in [0..2usize, 0..2usize, 0..2usize, 0..2usize],
        ceil: bool, value in -3.0..3.0f64,
    ) {
        let padding = [pads[0].min(kh / 2), pads[1].min(kh / 2), pads[2].min(kw / 2), pads[3].min(kw / 2)];
        prop_assume!(kh <= h + padding[0] + padding[1] && kw <= w + padding[2] + padding[3]);
        let x = ArrayD::from_elem(IxDyn(&[2, 3, h, w]), value);
        let oh = netc::graph::pool_out(h, [padding[0], padding[1]], kh, sh, 1, ceil);
        let ow = netc::graph::pool_out(w, [padding[2], padding[3]], kw, sw, 1, ceil);
        let want = ArrayD::from_elem(IxDyn(&[2, 3, oh, ow]), value);
        for op in [PoolOp::Max, PoolOp::Avg { count_include_pad: false }] {
            let pool = Op::Pool { op, kernel: [kh, kw], stride: [sh, sw], padding, dilation: [1, 1], ceil_mode: ceil };
            let y = eval_node(&pool, &[&x], &[2, 3, oh, ow]);
            close(&y, &want, 1e-13)?;
        }
    }

    /// Lowered softmax: every row sums to 1 and every value is in (0, 1].
    #[test]
    fn softmax_rows_sum_to_one(n in 1..5usize, f in 1..12usize, scale in 0.1..30.0f64, seed: u64) {
        let lg = spec_graph(&format!("model t {{ input x: [{f}]\n softmax }}"));
        let g = netc::lower::lower(&lg, n);
        let x = random(&[n, f], seed).mapv(|v| v * scale);
        let y = reference::run(&g, &[], &[("x", x)]).unwrap().remove(0);
        for row in y.outer_iter() {
            prop_assert!((row.sum() - 1.0).abs() < 1e-12, "row sums to {}", row.sum());
            prop_assert!(row.iter().all(|&v| v > 0.0 && v <= 1.0));
        }
    }

    /// Reshaping to any shape with the same number of elements and back is the identity.
    #[test]
    fn reshape_then_back_is_identity(dims in prop::collection::vec(1..5usize, 1..5), seed: u64) {
        let x = random(&dims, seed);
        let mut other = dims.clone();
        other.reverse();
        let flat = vec![dims.iter().product::<usize>()];
        for target in [other, flat] {
            let y = eval_node(&Op::Reshape, &[&x], &target);
            prop_assert_eq!(y.iter().copied().collect::<Vec<_>>(), x.iter().copied().collect::<Vec<_>>());
            let back = eval_node(&Op::Reshape, &[&y], &dims);
            prop_assert_eq!(&back, &x);
        }
    }

    /// Permuting and then applying the inverse permutation is the identity.
    #[test]
    fn permute_then_inverse_is_identity(
        (dims, perm) in prop::collection::vec(1..5usize, 1..6)
            .prop_flat_map(|d| { let r = d.len(); (Just(d), Just((0..r).collect::<Vec<_>>()).prop_shuffle()) }),
        seed: u64,
    ) {
        let x = random(&dims, seed);
        let pshape: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let y = eval_node(&Op::Permute { perm: perm.clone() }, &[&x], &pshape);
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let back = eval_node(&Op::Permute { perm: inv }, &[&y], &dims);
        prop_assert_eq!(&back, &x);
    }
}

/// One step of a random graph: an op applied to the current value `[N, C, H, W]`.
#[derive(Debug, Clone)]
enum Step {
    Conv {
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    },
    Unary(UnaryOp),
    MaxPool {
        k: usize,
        stride: usize,
        pad: usize,
        ceil: bool,
    },
    AvgPool {
        k: usize,
        stride: usize,
        pad: usize,
        ceil: bool,
        cip: bool,
    },
    Adaptive {
        out: usize,
    },
    /// x * param[1, C, 1, 1] + scalar
    ScaleShift {
        shift: f32,
    },
    /// x - mean(x) / 2 over (H, W), kept and broadcast (half the mean: subtracting the whole
    /// mean of near-equal values would measure cancellation, not the interpreter)
    Center,
    /// concat(x, relu(x)) along channels, then the first C channels of the reversed order
    ConcatSlice,
    /// permute to NHWC and back
    Transpose,
    /// LRN-like: x / (1 + mean over channels of x²)^0.75
    Normalize,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1..6usize, 1..4usize, 1..3usize, 0..2usize, 1..3usize).prop_map(
            |(out, k, stride, pad, groups)| Step::Conv {
                out,
                k,
                stride,
                pad,
                groups
            }
        ),
        prop_oneof![
            Just(UnaryOp::Relu),
            Just(UnaryOp::Tanh),
            Just(UnaryOp::Sigmoid),
            Just(UnaryOp::Abs),
            Just(UnaryOp::Neg),
        ]
        .prop_map(Step::Unary),
        (1..4usize, 1..3usize, 0..2usize, any::<bool>()).prop_map(|(k, stride, pad, ceil)| {
            Step::MaxPool {
                k,
                stride,
                pad,
                ceil,
            }
        }),
        (
            1..4usize,
            1..3usize,
            0..2usize,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(k, stride, pad, ceil, cip)| Step::AvgPool {
                k,
                stride,
                pad,
                ceil,
                cip
            }),
        (2..5usize).prop_map(|out| Step::Adaptive { out }),
        (-1.0..1.0f32).prop_map(|shift| Step::ScaleShift { shift }),
        Just(Step::Center),
        Just(Step::ConcatSlice),
        Just(Step::Transpose),
        Just(Step::Normalize),
    ]
}

/// Builds a graph from `steps` over an input `[n, c, h, w]`, skipping steps that do not fit
/// the current shape. Returns the graph and its parameter shapes.
fn random_graph(shape: [usize; 4], steps: &[Step]) -> (Graph, Vec<Vec<usize>>) {
    let mut g = Graph::default();
    let mut params: Vec<Vec<usize>> = vec![];
    let x0 = g.push(Op::Input { name: "x".into() }, vec![], shape.to_vec(), "x");
    g.inputs.push(("x".into(), x0));
    let mut x = x0;
    let mut param = |g: &mut Graph, shape: Vec<usize>| {
        params.push(shape.clone());
        g.push(
            Op::Param {
                index: params.len() - 1,
            },
            vec![],
            shape,
            "p",
        )
    };
    for s in steps {
        let [n, c, h, w]: [usize; 4] = g.shape(x).try_into().unwrap();
        match *s {
            Step::Conv {
                out,
                k,
                stride,
                pad,
                groups,
            } => {
                if c % groups != 0 || k > h + 2 * pad || k > w + 2 * pad {
                    continue;
                }
                let out = out * groups;
                let wt = param(&mut g, vec![out, c / groups, k, k]);
                let op = Op::Conv2d {
                    stride: [stride; 2],
                    padding: [pad; 4],
                    dilation: [1, 1],
                    groups,
                };
                x = g.add(op, vec![x, wt], "conv");
            }
            Step::Unary(u) => x = g.add(Op::Unary(u), vec![x], "unary"),
            Step::MaxPool {
                k,
                stride,
                pad,
                ceil,
            }
            | Step::AvgPool {
                k,
                stride,
                pad,
                ceil,
                ..
            } => {
                let pad = pad.min(k / 2);
                if k > h + 2 * pad || k > w + 2 * pad {
                    continue;
                }
                let op = match *s {
                    Step::AvgPool { cip, .. } => PoolOp::Avg {
                        count_include_pad: cip,
                    },
                    _ => PoolOp::Max,
                };
                let op = Op::Pool {
                    op,
                    kernel: [k; 2],
                    stride: [stride; 2],
                    padding: [pad; 4],
                    dilation: [1, 1],
                    ceil_mode: ceil,
                };
                x = g.add(op, vec![x], "pool");
            }
            Step::Adaptive { out } => {
                x = g.add(
                    Op::AdaptiveAvgPool { output: [out; 2] },
                    vec![x],
                    "adaptive",
                )
            }
            Step::ScaleShift { shift } => {
                let p = param(&mut g, vec![c]);
                let p = g.push(Op::Reshape, vec![p], vec![1, c, 1, 1], "scale");
                let y = g.add(Op::Binary(BinaryOp::Mul), vec![x, p], "scale");
                let s = g.push(Op::Scalar { value: shift }, vec![], vec![], "shift");
                x = g.add(Op::Binary(BinaryOp::Add), vec![y, s], "shift");
            }
            Step::Center => {
                let m = g.add(
                    Op::Reduce {
                        op: ReduceOp::Mean,
                        axes: vec![2, 3],
                    },
                    vec![x],
                    "center",
                );
                let half = g.push(Op::Scalar { value: 0.5 }, vec![], vec![], "center");
                let m = g.add(Op::Binary(BinaryOp::Mul), vec![m, half], "center");
                x = g.add(Op::Binary(BinaryOp::Sub), vec![x, m], "center");
            }
            Step::ConcatSlice => {
                let r = g.add(Op::Unary(UnaryOp::Relu), vec![x], "cat");
                let cat = g.add(Op::Concat { axis: 1 }, vec![r, x], "cat");
                x = g.add(
                    Op::Slice {
                        axis: 1,
                        start: c / 2,
                        end: c / 2 + c,
                    },
                    vec![cat],
                    "cat",
                );
            }
            Step::Transpose => {
                let t = g.add(
                    Op::Permute {
                        perm: vec![0, 2, 3, 1],
                    },
                    vec![x],
                    "t",
                );
                let r = g.push(Op::Reshape, vec![t], vec![n, h * w, c], "t");
                let r = g.push(Op::Reshape, vec![r], vec![n, h, w, c], "t");
                x = g.add(
                    Op::Permute {
                        perm: vec![0, 3, 1, 2],
                    },
                    vec![r],
                    "t",
                );
            }
            Step::Normalize => {
                let sq = g.add(Op::Binary(BinaryOp::Mul), vec![x, x], "norm");
                let m = g.add(
                    Op::Reduce {
                        op: ReduceOp::Mean,
                        axes: vec![1],
                    },
                    vec![sq],
                    "norm",
                );
                let one = g.push(Op::Scalar { value: 1.0 }, vec![], vec![], "norm");
                let d = g.add(Op::Binary(BinaryOp::Add), vec![m, one], "norm");
                let b = g.push(Op::Scalar { value: 0.75 }, vec![], vec![], "norm");
                let d = g.add(Op::Binary(BinaryOp::Pow), vec![d, b], "norm");
                x = g.add(Op::Binary(BinaryOp::Div), vec![x, d], "norm");
            }
        }
    }
    g.outputs.push(("y".into(), x));
    (g, params)
}

proptest! {
    // A fixed seed: a random graph can be ill-conditioned (e.g. relu(tanh(x)·p − 0.67) keeps
    // only values produced by cancellation), and then f32 legitimately differs from f64 by more
    // than 1e-5 — about once in a few thousand cases. With the fixed seed the cases are the
    // same on every run, so a failure means the interpreter (or the generator) changed.
    #![proptest_config(Config { rng_seed: RngSeed::Fixed(20_250_601), ..config(64) })]

    /// The same random graph in f32 and f64 agrees to 1e-5 relative.
    #[test]
    fn f32_agrees_with_f64_on_random_graphs(
        n in 1..3usize, c in 2..5usize, h in 3..10usize, w in 3..10usize,
        steps in prop::collection::vec(step(), 1..7),
        seed: u64,
    ) {
        let (g, pshapes) = random_graph([n, c, h, w], &steps);
        let x = random(&[n, c, h, w], seed);
        let params: Vec<ArrayD<f64>> = pshapes.iter().enumerate().map(|(i, s)| random(s, seed ^ (i as u64 + 1))).collect();
        // Round the f64 data to f32 first, so that both runs start from the same values.
        let x = x.mapv(|v| f64::from(v as f32));
        let params: Vec<ArrayD<f64>> = params.into_iter().map(|p| p.mapv(|v| f64::from(v as f32))).collect();
        let p32: Vec<ArrayD<f32>> = params.iter().map(|p| p.mapv(|v| v as f32)).collect();
        let y64 = reference::run(&g, &params, &[("x", x.clone())]).unwrap().remove(0);
        let y32 = reference::run(&g, &p32, &[("x", x.mapv(|v| v as f32))]).unwrap().remove(0);
        let norm = y64.iter().map(|v| v * v).sum::<f64>().sqrt();
        // A relative error of a value near 0, or of a few values that may be a sum with heavy
        // cancellation, measures the conditioning of the random graph, not the interpreter.
        prop_assume!(norm > 1e-6 && y64.len() >= 16);
        close(&y32.mapv(f64::from), &y64, 1e-5)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. End to end: the reference models
// ---------------------------------------------------------------------------------------------

/// Runs `specs/<model>.net` on the reference batch with the reference weights and compares
/// with PyTorch's eval-mode output. Returns (f32 error, f64 error).
fn model_case(model: &str) -> (f64, f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = load_file(root.join(format!("specs/{model}.net")), &Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let lg = &spec.graph;
    let dir = data_dir().join(model);
    let weights = load_safetensors(&dir.join("weights.safetensors"));
    let input = load_npy_f32(&dir.join("input.npy"));
    let expected = load_npy_f32(&dir.join("eval_output.npy"));
    let g = netc::lower::lower(lg, input.shape()[0]);

    fn go<T: Real>(
        g: &Graph,
        lg: &netc::layer_graph::LayerGraph,
        weights: &HashMap<String, ArrayD<f32>>,
        input: &ArrayD<f32>,
    ) -> ArrayD<T> {
        let params: Vec<ArrayD<T>> = lg
            .params
            .iter()
            .map(|p| {
                if p.kind == netc::layer_graph::ParamKind::NumBatchesTracked {
                    return ArrayD::from_elem(IxDyn(&[0]), T::ZERO);
                }
                let w = weights
                    .get(&p.path)
                    .unwrap_or_else(|| panic!("no weights for `{}`", p.path));
                to::<T>(w)
            })
            .collect();
        let name = lg.inputs[0].name.as_str();
        let mut out =
            reference::run(g, &params, &[(name, to::<T>(input))]).unwrap_or_else(|e| panic!("{e}"));
        out.remove(0)
    }
    let y32 = go::<f32>(&g, lg, &weights, &input);
    let y64 = go::<f64>(&g, lg, &weights, &input);
    let (e32, e64) = (rel_err(&y32, &expected), rel_err(&y64, &expected));
    println!("{model:<16} f32 rel err {e32:.2e}   f64 rel err {e64:.2e}");
    assert!(e32 <= 1e-4, "{model}: f32 relative error {e32:e}");
    assert!(e64 <= 1e-4, "{model}: f64 relative error {e64:e}");
    (e32, e64)
}

#[test]
fn model_lenet5() {
    model_case("lenet5");
}

#[test]
fn model_mini_resnet() {
    model_case("mini_resnet");
}

#[test]
fn model_mini_inception() {
    model_case("mini_inception");
}
