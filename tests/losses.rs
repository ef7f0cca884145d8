//! The losses of `netc::loss` (built from primitive ops) against plain, independent Rust
//! computations on random data of odd sizes (the reference interpreter in f64, relative error
//! at most 1e-10) and against PyTorch where the shared reference data has the case (`gram`,
//! `triplet_margin`: f32, error at most 1e-5). Also: the dispatcher `attach` and its messages,
//! the stability of BCE with large logits, and terms adding up in the output `loss`.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use netc::graph::{Graph, Op, ValueId};
use netc::loss;
use netc::train_config::Loss;
use safetensors::{Dtype, SafeTensors};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// SplitMix64: reproducible random data without a dependency.
/// This file's seeded values: the project's SplitMix64 (`netc::data::rng::splitmix64`) with
/// the draws these tests need (seeds of past failures stay reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        netc::data::rng::splitmix64(&mut self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-scale, scale).
    fn array(&mut self, shape: &[usize], scale: f64) -> ArrayD<f64> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| (2.0 * self.unit() - 1.0) * scale).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }
}

/// A graph with the given inputs.
fn graph(inputs: &[(&str, &[usize])]) -> (Graph, Vec<ValueId>) {
    let mut g = Graph::default();
    let ids = inputs
        .iter()
        .map(|(name, shape)| {
            let v = g.push(
                Op::Input {
                    name: name.to_string(),
                },
                vec![],
                shape.to_vec(),
                name,
            );
            g.inputs.push((name.to_string(), v));
            v
        })
        .collect();
    (g, ids)
}

/// Runs `g` in f64 through the reference interpreter; returns the output `loss`.
fn run_loss(g: &Graph, inputs: &[(&str, &ArrayD<f64>)]) -> f64 {
    let ins: Vec<(&str, ArrayD<f64>)> = inputs.iter().map(|(n, a)| (*n, (*a).clone())).collect();
    let out = netc::reference::run::<f64>(g, &[], &ins).unwrap();
    let i = g.outputs.iter().position(|(n, _)| n == "loss").unwrap();
    assert_eq!(out[i].shape(), [1], "a loss is a [1] tensor");
    out[i][[0]]
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    println!("{what}: {got} vs {want}, relative error {err:e}");
    assert!(
        err <= tol,
        "{what}: {got} vs {want}, relative error {err:e}"
    );
}

/// A constant as the IR stores it (an f32 scalar), so oracle and graph use the same number.
fn f32c(x: f64) -> f64 {
    x as f32 as f64
}

/// ‖a − b + eps‖₂ per row of [N, D] arrays, eps as the graph stores it.
fn pairwise(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Vec<f64> {
    let eps = f32c(1e-6);
    let (n, d) = (a.shape()[0], a.shape()[1]);
    (0..n)
        .map(|i| {
            (0..d)
                .map(|j| (a[[i, j]] - b[[i, j]] + eps).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// Gram matrices [N, C, C] of [N, C, H, W] features, divided by C·H·W.
fn gram_oracle(f: &ArrayD<f64>) -> ArrayD<f64> {
    let s = f.shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let mut out = ArrayD::zeros(IxDyn(&[n, c, c]));
    for b in 0..n {
        for i in 0..c {
            for j in 0..c {
                let mut acc = 0.0;
                for y in 0..h {
                    for x in 0..w {
                        acc += f[[b, i, y, x]] * f[[b, j, y, x]];
                    }
                }
                out[[b, i, j]] = acc / (c * h * w) as f64;
            }
        }
    }
    out
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n as f64
}

/// The f32 tensors of a PyTorch reference case, widened to f64.
fn torch_case(case: &str) -> HashMap<String, ArrayD<f32>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/reference/ops/{case}.safetensors"));
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == Dtype::F32)
        .map(|(name, t)| {
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, ArrayD::from_shape_vec(IxDyn(t.shape()), v).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Each loss against a plain computation
// ---------------------------------------------------------------------------------------------

#[test]
fn mse_and_l1_match_plain_rust() {
    let mut rng = Rng(1);
    let shape = [3, 5, 7];
    let (p, t) = (rng.array(&shape, 2.0), rng.array(&shape, 2.0));
    let pairs = || p.iter().zip(t.iter());

    let (mut g, ids) = graph(&[("pred", &shape)]);
    loss::mse(&mut g, ids[0], "target");
    let got = run_loss(&g, &[("pred", &p), ("target", &t)]);
    assert_close(
        "mse",
        got,
        mean(pairs().map(|(a, b)| (a - b).powi(2))),
        1e-10,
    );

    let (mut g, ids) = graph(&[("pred", &shape)]);
    loss::l1(&mut g, ids[0], "target");
    let got = run_loss(&g, &[("pred", &p), ("target", &t)]);
    assert_close("l1", got, mean(pairs().map(|(a, b)| (a - b).abs())), 1e-10);
}

/// BCE as the textbook formula `-(t·log σ(x) + (1-t)·log(1-σ(x)))`, in f64.
fn bce_naive(x: f64, t: f64) -> f64 {
    let s = 1.0 / (1.0 + (-x).exp());
    -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
}

#[test]
fn bce_with_logits_matches_plain_rust() {
    let mut rng = Rng(2);
    let shape = [5, 3, 3];
    let x = rng.array(&shape, 4.0);
    let t = rng.array(&shape, 0.5).mapv(|v| v + 0.5); // probabilities in [0, 1)
    let (mut g, ids) = graph(&[("x", &shape)]);
    loss::bce_with_logits(&mut g, ids[0], "t");
    let got = run_loss(&g, &[("x", &x), ("t", &t)]);
    let want = mean(x.iter().zip(t.iter()).map(|(&x, &t)| bce_naive(x, t)));
    assert_close("bce_with_logits", got, want, 1e-10);
}

#[test]
fn bce_with_logits_is_stable_for_large_logits() {
    // |x| = 100: exp(100) would overflow f32, and σ(x) rounds to exactly 0 or 1, so the naive
    // formula takes log(0). The stable form stays finite and exact.
    let x: ArrayD<f64> = ArrayD::from_shape_vec(
        IxDyn(&[2, 3]),
        vec![100.0, -100.0, 100.0, -100.0, 100.0, -100.0],
    )
    .unwrap();
    let t: ArrayD<f64> =
        ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, 0.0, 0.0, 1.0, 0.25, 0.75]).unwrap();
    // Per element: max(x, 0) - x·t + log(1 + e^-100), with e^-100 ≈ 3.7e-44 negligible.
    let want = mean(
        x.iter()
            .zip(t.iter())
            .map(|(&x, &t)| x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()),
    );
    assert_close(
        "want",
        want,
        (0.0 + 0.0 + 100.0 + 100.0 + 75.0 + 75.0) / 6.0,
        1e-15,
    );
    let (mut g, ids) = graph(&[("x", &[2, 3])]);
    loss::bce_with_logits(&mut g, ids[0], "t");
    let got = run_loss(&g, &[("x", &x), ("t", &t)]);
    assert_close("bce |x| = 100, f64", got, want, 1e-12);
    // In f32 too, where e^100 overflows.
    let out = netc::reference::run::<f32>(
        &g,
        &[],
        &[("x", x.mapv(|v| v as f32)), ("t", t.mapv(|v| v as f32))],
    )
    .unwrap();
    let got32 = out[0][[0]] as f64;
    assert!(got32.is_finite());
    assert_close("bce |x| = 100, f32", got32, want, 1e-6);
    // The naive formula really would fail here.
    assert!(bce_naive(100.0, 0.0).is_infinite());
}

#[test]
fn triplet_margin_matches_plain_rust() {
    let mut rng = Rng(3);
    let shape = [7, 11];
    let (a, p, n) = (
        rng.array(&shape, 1.0),
        rng.array(&shape, 1.0),
        rng.array(&shape, 1.0),
    );
    let margin = 0.3;
    let (mut g, ids) = graph(&[("a", &shape), ("p", &shape), ("n", &shape)]);
    loss::triplet_margin(&mut g, ids[0], ids[1], ids[2], margin);
    let got = run_loss(&g, &[("a", &a), ("p", &p), ("n", &n)]);
    let (dp, dn) = (pairwise(&a, &p), pairwise(&a, &n));
    let hinges: Vec<f64> = (0..7)
        .map(|i| (dp[i] - dn[i] + f32c(margin)).max(0.0))
        .collect();
    // Random data of this size has both active and inactive hinges: the test sees both.
    assert!(hinges.contains(&0.0) && hinges.iter().any(|&h| h > 0.0));
    assert_close("triplet", got, mean(hinges.into_iter()), 1e-10);
}

#[test]
fn triplet_margin_matches_pytorch() {
    let t = torch_case("triplet_margin");
    let want = *t["out"].iter().next().unwrap() as f64;
    let shape = t["in0"].shape().to_vec();
    let (mut g, ids) = graph(&[("a", &shape), ("p", &shape), ("n", &shape)]);
    loss::triplet_margin(&mut g, ids[0], ids[1], ids[2], 0.2);
    let ins32 = [("a", "in0"), ("p", "in1"), ("n", "in2")].map(|(k, f)| (k, t[f].clone()));
    let out = netc::reference::run::<f32>(&g, &[], &ins32).unwrap();
    assert_close("triplet vs PyTorch, f32", out[0][[0]] as f64, want, 1e-5);
    let ins64: Vec<(&str, ArrayD<f64>)> = ins32
        .iter()
        .map(|(k, a)| (*k, a.mapv(|v| v as f64)))
        .collect();
    let out = netc::reference::run::<f64>(&g, &[], &ins64).unwrap();
    assert_close("triplet vs PyTorch, f64", out[0][[0]], want, 1e-5);
}

#[test]
fn contrastive_matches_plain_rust() {
    let mut rng = Rng(4);
    let (n, d) = (9, 5);
    let (x1, x2) = (rng.array(&[n, d], 1.0), rng.array(&[n, d], 1.0));
    let same = ArrayD::from_shape_vec(IxDyn(&[n]), (0..n).map(|i| f64::from(i % 3 == 0)).collect())
        .unwrap();
    let dist = pairwise(&x1, &x2);
    // A margin between the distances, so some dissimilar pairs are inside it and some outside.
    let mut sorted = dist.clone();
    sorted.sort_by(f64::total_cmp);
    let margin = sorted[n / 2];
    let m = f32c(margin);
    let per: Vec<f64> = (0..n)
        .map(|i| {
            let s = same[[i]];
            s * dist[i].powi(2) + (1.0 - s) * (m - dist[i]).max(0.0).powi(2)
        })
        .collect();
    assert!((0..n).any(|i| same[[i]] == 0.0 && dist[i] < m));
    assert!((0..n).any(|i| same[[i]] == 0.0 && dist[i] > m));
    let (mut g, ids) = graph(&[("x1", &[n, d]), ("x2", &[n, d])]);
    loss::contrastive(&mut g, ids[0], ids[1], margin);
    let got = run_loss(&g, &[("x1", &x1), ("x2", &x2), ("same", &same)]);
    assert_close("contrastive", got, mean(per.into_iter()), 1e-10);
}

#[test]
fn cross_entropy_matches_plain_rust() {
    let mut rng = Rng(5);
    let (n, k) = (7, 9);
    let x = rng.array(&[n, k], 3.0);
    let labels: Vec<i64> = (0..n).map(|i| ((i * 5) % k) as i64).collect();
    let t = loss::one_hot(&labels, k).unwrap().mapv(|v| v as f64);
    let ls = 0.1;
    let (mut g, ids) = graph(&[("x", &[n, k])]);
    loss::cross_entropy(&mut g, ids[0], ls);
    let got = run_loss(&g, &[("x", &x), ("targets", &t)]);
    let want = mean((0..n).map(|i| {
        let lse = (0..k).map(|j| x[[i, j]].exp()).sum::<f64>().ln();
        (0..k)
            .map(|j| {
                let tj = t[[i, j]] * f32c(1.0 - ls) + f32c(ls / k as f64);
                -tj * (x[[i, j]] - lse)
            })
            .sum::<f64>()
    }));
    // The graph's batch mean multiplies by -1/N rounded to f32.
    let want = want * (-(1.0f32 / n as f32) as f64) / (-1.0 / n as f64);
    assert_close("cross_entropy", got, want, 1e-10);
}

// ---------------------------------------------------------------------------------------------
// Gram matrices, style and content (Gatys et al.)
// ---------------------------------------------------------------------------------------------

fn run_gram(f: &ArrayD<f64>) -> ArrayD<f64> {
    let (mut g, ids) = graph(&[("f", f.shape())]);
    let gm = loss::gram(&mut g, ids[0]);
    g.outputs.push(("gram".into(), gm));
    netc::reference::run::<f64>(&g, &[], &[("f", f.clone())])
        .unwrap()
        .remove(0)
}

fn max_rel(got: &ArrayD<f64>, want: &ArrayD<f64>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

#[test]
fn gram_matches_plain_rust_and_pytorch() {
    let f = Rng(6).array(&[3, 5, 3, 7], 1.0);
    let e = max_rel(&run_gram(&f), &gram_oracle(&f));
    assert!(e <= 1e-12, "gram vs plain: {e:e}");

    let t = torch_case("gram");
    let x = t["in0"].mapv(|v| v as f64);
    let want = t["out"].mapv(|v| v as f64);
    let e = max_rel(&run_gram(&x), &want);
    println!("gram vs PyTorch: {e:e}");
    assert!(e <= 1e-5, "gram vs PyTorch: {e:e}");
    // And the f32 interpreter.
    let (mut g, ids) = graph(&[("f", t["in0"].shape())]);
    let gm = loss::gram(&mut g, ids[0]);
    g.outputs.push(("gram".into(), gm));
    let out = netc::reference::run::<f32>(&g, &[], &[("f", t["in0"].clone())]).unwrap();
    let e = max_rel(&out[0].mapv(|v| v as f64), &want);
    assert!(e <= 1e-5, "gram f32 vs PyTorch: {e:e}");
}

#[test]
fn style_and_content_losses_match_plain_rust() {
    let mut rng = Rng(7);
    let n = 2;
    let (s1, s2) = ([n, 3, 5, 5], [n, 5, 3, 1]);
    let (f1, f2) = (rng.array(&s1, 1.0), rng.array(&s2, 1.0));
    let (t1, t2) = (rng.array(&[1, 3, 3], 0.2), rng.array(&[1, 5, 5], 0.2));
    let (w1, w2) = (0.7, 1.3);
    let style_term = |f: &ArrayD<f64>, t: &ArrayD<f64>| {
        let gm = gram_oracle(f);
        let c = t.shape()[1];
        mean(
            (0..n)
                .flat_map(|b| (0..c).flat_map(move |i| (0..c).map(move |j| (b, i, j))))
                .map(|(b, i, j)| (gm[[b, i, j]] - t[[0, i, j]]).powi(2)),
        )
    };
    let style = f32c(w1) * style_term(&f1, &t1) + f32c(w2) * style_term(&f2, &t2);

    let (mut g, ids) = graph(&[("f1", &s1), ("f2", &s2)]);
    loss::style_loss(&mut g, &[(ids[0], w1), (ids[1], w2)]);
    let inputs = [
        ("f1", &f1),
        ("f2", &f2),
        ("style_target.0", &t1),
        ("style_target.1", &t2),
    ];
    assert_close("style", run_loss(&g, &inputs), style, 1e-10);

    // Content loss is the MSE against the content features; attached after the style loss,
    // it adds to the same output `loss` (Gatys' total objective).
    let c = rng.array(&s2, 1.0);
    let content = mean(f2.iter().zip(c.iter()).map(|(a, b)| (a - b).powi(2)));
    loss::content_loss(&mut g, ids[1], "content_target");
    assert_eq!(
        g.outputs.iter().filter(|(n, _)| n == "loss").count(),
        1,
        "one output `loss`"
    );
    let mut inputs = inputs.to_vec();
    inputs.push(("content_target", &c));
    assert_close(
        "style + content",
        run_loss(&g, &inputs),
        style + content,
        1e-10,
    );
}

// ---------------------------------------------------------------------------------------------
// The dispatcher
// ---------------------------------------------------------------------------------------------

/// `attach` gives the same loss as calling the function directly.
#[test]
fn attach_picks_the_configured_loss() {
    let mut rng = Rng(8);
    let (n, d) = (5, 3);
    let x = rng.array(&[n, d], 2.0);
    let y = rng.array(&[n, d], 2.0);
    let z = rng.array(&[n, d], 2.0);
    let probs = rng.array(&[n, d], 0.5).mapv(|v| v + 0.5);
    let onehot = loss::one_hot(&[0, 2, 1, 1, 0], d).unwrap().mapv(f64::from);
    let same = ArrayD::from_shape_vec(IxDyn(&[n]), vec![1.0, 0.0, 0.0, 1.0, 0.0]).unwrap();

    type Direct = fn(&mut Graph, &[ValueId]);
    type Inputs<'a> = Vec<(&'a str, &'a ArrayD<f64>)>;
    let cases: Vec<(Loss, usize, Inputs, Direct)> = vec![
        (
            Loss::CrossEntropy {
                label_smoothing: 0.2,
            },
            1,
            vec![("targets", &onehot)],
            |g, o| {
                loss::cross_entropy(g, o[0], 0.2);
            },
        ),
        (Loss::Mse, 1, vec![("targets", &z)], |g, o| {
            loss::mse(g, o[0], "targets");
        }),
        (Loss::L1, 1, vec![("targets", &z)], |g, o| {
            loss::l1(g, o[0], "targets");
        }),
        (Loss::BceWithLogits, 1, vec![("targets", &probs)], |g, o| {
            loss::bce_with_logits(g, o[0], "targets");
        }),
        (Loss::Triplet { margin: 0.5 }, 3, vec![], |g, o| {
            loss::triplet_margin(g, o[0], o[1], o[2], 0.5);
        }),
        (
            Loss::Contrastive { margin: 2.0 },
            2,
            vec![("same", &same)],
            |g, o| {
                loss::contrastive(g, o[0], o[1], 2.0);
            },
        ),
    ];
    let data = [("x", &x), ("y", &y), ("z2", &z)];
    let shape = [n, d];
    for (l, outs, extra, direct) in cases {
        let names = &data[..outs];
        let spec: Vec<(&str, &[usize])> = names.iter().map(|(k, _)| (*k, &shape[..])).collect();
        let mut inputs: Vec<(&str, &ArrayD<f64>)> = names.to_vec();
        inputs.extend(extra);

        let (mut g, ids) = graph(&spec);
        let v = loss::attach(&mut g, &l, &ids).unwrap();
        assert_eq!(g.outputs, [("loss".to_string(), v)], "{l}");
        let got = run_loss(&g, &inputs);

        let (mut g, ids) = graph(&spec);
        direct(&mut g, &ids);
        let want = run_loss(&g, &inputs);
        assert!(got.is_finite() && got > 0.0, "{l}: {got}");
        assert_eq!(got, want, "{l}");
    }
}

#[test]
fn attach_says_what_the_loss_expects() {
    let err = |l: Loss, shapes: &[&[usize]]| {
        let spec: Vec<(String, &[usize])> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("in{i}"), *s))
            .collect();
        let spec: Vec<(&str, &[usize])> = spec.iter().map(|(k, s)| (k.as_str(), *s)).collect();
        let (mut g, ids) = graph(&spec);
        // Name the first output, as lowering does.
        if let Some(&v) = ids.first() {
            g.outputs.push(("embedding".into(), v));
        }
        let e = loss::attach(&mut g, &l, &ids).unwrap_err();
        println!("{e}");
        e
    };
    let e = err(Loss::Triplet { margin: 0.2 }, &[&[4, 16], &[4, 16]]);
    assert_eq!(
        e,
        "the `triplet(margin=0.2)` loss needs three outputs [N, D] of the same shape (anchor, \
         positive and negative embeddings); the model has 2 outputs: `embedding` [4, 16], [4, 16]"
    );
    let e = err(
        Loss::Triplet { margin: 0.2 },
        &[&[4, 16], &[4, 16], &[4, 8]],
    );
    assert!(
        e.contains("of the same shape") && e.contains("[4, 8]"),
        "{e}"
    );
    let e = err(Loss::Contrastive { margin: 1.0 }, &[&[4, 2, 8], &[4, 2, 8]]);
    assert!(e.contains("two outputs [N, D]"), "{e}");
    let e = err(
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        &[&[4, 10], &[4, 10]],
    );
    assert!(
        e.starts_with("the `cross_entropy(label_smoothing=0)` loss needs one output [N, K]")
            && e.ends_with("2 outputs: `embedding` [4, 10], [4, 10]"),
        "{e}"
    );
    let e = err(
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        &[&[4, 10, 3]],
    );
    assert!(e.ends_with("1 output: `embedding` [4, 10, 3]"), "{e}");
    let e = err(Loss::Mse, &[]);
    assert!(e.ends_with("no outputs"), "{e}");

    // Names the loss needs that the model already uses.
    let (mut g, ids) = graph(&[("targets", &[4, 3])]);
    let e = loss::attach(&mut g, &Loss::L1, &ids).unwrap_err();
    assert!(e.contains("input `targets`"), "{e}");
    let (mut g, ids) = graph(&[("x", &[4])]);
    g.outputs.push(("loss".into(), ids[0]));
    let e = loss::attach(&mut g, &Loss::Mse, &ids).unwrap_err();
    assert!(e.contains("already has an output named `loss`"), "{e}");
}

/// A siamese model written in `.net` with three embedding outputs, lowered for training, with
/// the loss of its `train` section attached: the loss is the triplet loss of its outputs.
#[test]
fn attach_to_a_lowered_triplet_model() {
    let src = "
block embed_net() {
  flatten
  fc1: dense(6)
  relu
  fc2: dense(4)
}

model siamese() {
  input anchor: [2, 3, 3]
  input positive: [2, 3, 3]
  input negative: [2, 3, 3]
  embed = shared embed_net()
  a = embed(anchor)
  p = embed(positive)
  n = embed(negative)
  output a, p, n
  train {
    loss: triplet(margin=0.5)
  }
}
";
    let spec = netc::load_str("siamese.net", src, &netc::Options::default()).unwrap();
    let lg = &spec.graph;
    let cfg = lg.train.as_ref().unwrap().loss.clone().unwrap();
    assert_eq!(cfg, Loss::Triplet { margin: 0.5 }.into());
    let batch = 5;
    let mut g = netc::lower::lower_with(lg, batch, netc::lower::Mode::Training);
    let outs: Vec<ValueId> = g.outputs[..lg.outputs.len()]
        .iter()
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(outs.len(), 3);
    let named: Vec<(String, ValueId)> = g.outputs[..lg.outputs.len()].to_vec();
    assert_eq!(named.len(), outs.len());
    loss::attach_objective(&mut g, &cfg, &named).unwrap();

    let mut rng = Rng(9);
    let params: Vec<ArrayD<f64>> = lg.params.iter().map(|p| rng.array(&p.shape, 0.5)).collect();
    let inputs: Vec<(&str, ArrayD<f64>)> = ["anchor", "positive", "negative"]
        .map(|k| (k, rng.array(&[batch, 2, 3, 3], 1.0)))
        .into();
    let out = netc::reference::run::<f64>(&g, &params, &inputs).unwrap();
    let (a, p, n) = (&out[0], &out[1], &out[2]);
    let (dp, dn) = (pairwise(a, p), pairwise(a, n));
    let want = mean((0..batch).map(|i| (dp[i] - dn[i] + 0.5).max(0.0)));
    let (name, got) = (&g.outputs.last().unwrap().0, out.last().unwrap()[[0]]);
    assert_eq!(name, "loss");
    assert_close("siamese triplet", got, want, 1e-10);
}

// ---------------------------------------------------------------------------------------------
// The JIT runs the same graphs
// ---------------------------------------------------------------------------------------------

/// Every loss graph compiles and runs through fusion and the JIT, in f32, agreeing with the
/// reference interpreter.
#[test]
fn losses_run_through_the_jit() {
    use netc::model::jit;
    use netc::runtime::Executable;
    let mut rng = Rng(10);
    let (n, d) = (5, 7);
    let f = |a: &ArrayD<f64>| a.mapv(|v| v as f32);
    let x = f(&rng.array(&[n, d], 2.0));
    let y = f(&rng.array(&[n, d], 2.0));
    let z = f(&rng.array(&[n, d], 2.0));
    let probs = f(&rng.array(&[n, d], 0.5).mapv(|v| v + 0.5));
    let same = ArrayD::from_shape_vec(IxDyn(&[n]), vec![1.0f32, 0.0, 0.0, 1.0, 0.0]).unwrap();
    let feats = f(&rng.array(&[2, 3, 4, 5], 1.0));
    let style_t = f(&rng.array(&[1, 3, 3], 0.1));

    type Build = fn(&mut Graph, &[ValueId]);
    type Inputs<'a> = Vec<(&'a str, &'a ArrayD<f32>)>;
    let cases: Vec<(&str, Inputs, Build)> = vec![
        ("mse", vec![("x", &x), ("targets", &y)], |g, o| {
            loss::mse(g, o[0], "targets");
        }),
        ("l1", vec![("x", &x), ("targets", &y)], |g, o| {
            loss::l1(g, o[0], "targets");
        }),
        ("bce", vec![("x", &x), ("targets", &probs)], |g, o| {
            loss::bce_with_logits(g, o[0], "targets");
        }),
        ("triplet", vec![("x", &x), ("y", &y), ("z", &z)], |g, o| {
            loss::triplet_margin(g, o[0], o[1], o[2], 0.5);
        }),
        (
            "contrastive",
            vec![("x", &x), ("y", &y), ("same", &same)],
            |g, o| {
                loss::contrastive(g, o[0], o[1], 4.0);
            },
        ),
        (
            "style",
            vec![("x", &feats), ("style_target.0", &style_t)],
            |g, o| {
                loss::style_loss(g, &[(o[0], 2.0)]);
            },
        ),
    ];
    for (name, inputs, build) in cases {
        let model_inputs: Vec<(&str, &[usize])> = inputs
            .iter()
            .filter(|(k, _)| ["x", "y", "z"].contains(k))
            .map(|(k, a)| (*k, a.shape()))
            .collect();
        let (mut g, ids) = graph(&model_inputs);
        build(&mut g, &ids);
        let owned: Vec<(&str, ArrayD<f32>)> =
            inputs.iter().map(|(k, a)| (*k, (*a).clone())).collect();
        let want = netc::reference::run::<f32>(&g, &[], &owned).unwrap()[0][[0]];
        let mut exe = Executable::new(netc::fuse::fuse(&g), &[], jit().unwrap(), 2).unwrap();
        let got = exe.run(&inputs).unwrap()[0].1[[0]];
        let err = ((got - want) / want).abs();
        println!("{name}: jit {got} vs reference {want}");
        assert!(err <= 1e-5, "{name}: jit {got} vs reference {want}");
    }
}
