//! Training-mode forward pass (batchnorm with batch statistics, running statistics updated)
//! against PyTorch's `train_output.npy` and `state_after_forward.safetensors`, through the
//! reference interpreter and through the JIT.

mod common;
use common::{REFERENCE_MODELS, reference_spec};
use ndarray::{ArrayD, IxDyn};
use netc::io::weights::Weights;
use netc::lower::{Mode, lower_with};
use netc::model::{jit, params_f32};
use netc::runtime::Executable;
use netc::{Options, load_file};

fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The f32 tensors of a safetensors file, by name.
fn tensors(path: &str) -> Vec<(String, ArrayD<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
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

#[test]
fn train_mode_forward_matches_pytorch() {
    for name in REFERENCE_MODELS {
        let spec = reference_spec(name);
        let dir = format!("tests/data/reference/{name}");
        let w = Weights::load(format!("{dir}/weights.safetensors"), &spec.graph).unwrap();
        let params = params_f32(&w);
        let x = netc::io::npy::read_f32(format!("{dir}/input.npy")).unwrap();
        let want = netc::io::npy::read_f32(format!("{dir}/train_output.npy")).unwrap();
        let state = tensors(&format!("{dir}/state_after_forward.safetensors"));
        let prims = lower_with(&spec.graph, x.shape()[0], Mode::Training);

        let oracle = netc::reference::run::<f32>(&prims, &params, &[("image", x.clone())]).unwrap();
        let mut exe =
            Executable::new(netc::fuse::fuse(&prims), &params, jit().unwrap(), 2).unwrap();
        let jitted: Vec<ArrayD<f32>> = exe
            .run(&[("image", &x)])
            .unwrap()
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        for (label, outs) in [("oracle", &oracle), ("jit", &jitted)] {
            let e = rel_err(&outs[0], &want);
            assert!(e <= 1e-4, "{name} {label}: train output error {e:e}");
            // Every running statistic PyTorch updated, under its buffer path.
            let mut checked = 0;
            for ((out_name, _), value) in prims.outputs.iter().zip(outs.iter()).skip(1) {
                let (_, expected) = state
                    .iter()
                    .find(|(n, _)| n == out_name)
                    .unwrap_or_else(|| panic!("{name}: no {out_name} in the reference"));
                let e = rel_err(value, expected);
                assert!(e <= 1e-4, "{name} {label}: {out_name} error {e:e}");
                checked += 1;
            }
            let expected_stats = state
                .iter()
                .filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
                .count();
            assert_eq!(
                checked, expected_stats,
                "{name}: running statistics compared"
            );
        }
    }
}

#[test]
fn cross_entropy_matches_pytorch() {
    // The single-op case: logits [4, 5], labels [1, 0, 3, 2], label smoothing 0.1.
    let t = tensors("tests/data/reference/ops/cross_entropy_ls.safetensors");
    let get = |n: &str| t.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let (logits, want) = (get("in0"), get("out"));
    let mut g = netc::graph::Graph::default();
    let x = g.push(
        netc::graph::Op::Input { name: "x".into() },
        vec![],
        vec![4, 5],
        "x",
    );
    g.inputs.push(("x".into(), x));
    netc::loss::cross_entropy(&mut g, x, 0.1);
    let targets = netc::loss::one_hot(&[1, 0, 3, 2], 5).unwrap();
    let out = netc::reference::run::<f32>(
        &g,
        &[],
        &[("x", logits.clone()), ("targets", targets.clone())],
    )
    .unwrap();
    let got = out[0][[0]];
    assert!(
        (got - want.iter().next().unwrap()).abs() < 1e-6,
        "{got} vs {want}"
    );
    let mut exe = Executable::new(netc::fuse::fuse(&g), &[], jit().unwrap(), 2).unwrap();
    let out = exe.run(&[("x", &logits), ("targets", &targets)]).unwrap();
    assert!((out[0].1[[0]] - want.iter().next().unwrap()).abs() < 1e-6);
    assert!(netc::loss::one_hot(&[5], 5).is_err());
}

#[test]
fn train_loss_of_the_reference_models_matches_pytorch() {
    for name in ["lenet5", "mini_resnet", "mini_inception"] {
        let spec = load_file(format!("specs/{name}.net"), &Options::default()).unwrap();
        let dir = format!("tests/data/reference/{name}");
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/meta.json")).unwrap())
                .unwrap();
        let want = meta["train_loss"].as_f64().unwrap();
        let w = Weights::load(format!("{dir}/weights.safetensors"), &spec.graph).unwrap();
        let x = netc::io::npy::read_f32(format!("{dir}/input.npy")).unwrap();
        let labels = netc::io::npy::read_i64(format!("{dir}/labels.npy")).unwrap();
        let mut prims = lower_with(&spec.graph, x.shape()[0], Mode::Training);
        let logits = prims.outputs[0].1;
        let classes = prims.shape(logits)[1];
        netc::loss::cross_entropy(&mut prims, logits, 0.0);
        let targets = netc::loss::one_hot(labels.as_slice().unwrap(), classes).unwrap();
        let mut exe =
            Executable::new(netc::fuse::fuse(&prims), &params_f32(&w), jit().unwrap(), 2).unwrap();
        let out = exe.run(&[("image", &x), ("targets", &targets)]).unwrap();
        let (lname, loss) = out.last().unwrap();
        assert_eq!(lname, "loss");
        let got = loss[[0]] as f64;
        assert!(
            (got - want).abs() / want.abs() < 1e-5,
            "{name}: loss {got} vs PyTorch {want}"
        );
    }
}

#[test]
fn dropout_in_training_is_seeded_per_step_and_matches_the_oracle() {
    let lg = netc::load_str(
        "t.net",
        "model t { input x: [64]\n d: dropout(0.3) }",
        &Options::default(),
    )
    .unwrap()
    .graph;
    let prims = lower_with(&lg, 50, Mode::Training);
    let x = ArrayD::from_shape_fn(IxDyn(&[50, 64]), |i| 1.0 + (i[0] * 64 + i[1]) as f32 * 1e-3);
    let oracle = netc::reference::run::<f32>(&prims, &[], &[("x", x.clone())]).unwrap();
    let mut exe = Executable::new(netc::fuse::fuse(&prims), &[], jit().unwrap(), 2).unwrap();
    let step0 = exe.run(&[("x", &x)]).unwrap().remove(0).1;
    assert_eq!(
        step0, oracle[0],
        "step 0 is the reference interpreter's mask"
    );
    let dropped = step0.iter().filter(|v| **v == 0.0).count() as f64 / step0.len() as f64;
    assert!((dropped - 0.3).abs() < 0.03, "dropped {dropped}");
    for (a, b) in step0.iter().zip(x.iter()) {
        assert!(
            *a == 0.0 || (a - b / 0.7).abs() < 1e-6,
            "kept values are scaled by 1/(1-p)"
        );
    }
    exe.set_random_step(5);
    let step5 = exe.run(&[("x", &x)]).unwrap().remove(0).1;
    assert_ne!(step5, step0, "a new mask every step");
    exe.set_random_step(5);
    assert_eq!(
        exe.run(&[("x", &x)]).unwrap().remove(0).1,
        step5,
        "reproducible"
    );
    // Inference: the identity.
    let inf = netc::lower::lower(&lg, 50);
    let mut exe = Executable::new(netc::fuse::fuse(&inf), &[], jit().unwrap(), 2).unwrap();
    assert_eq!(exe.run(&[("x", &x)]).unwrap().remove(0).1, x);
}

/// Batchnorm's batch statistics on channels whose mean is far from 0 (about 1000 standard
/// deviations): the one-pass statistics (shifted by each channel's first value) keep the batch
/// variance to about f32 accuracy, where the unshifted `E[x²] - E[x]²` would lose most of it.
/// The JIT (f32) against the reference interpreter in f64 on the same graph.
#[test]
fn batchnorm_statistics_of_offset_channels_are_accurate() {
    let spec = netc::load_str(
        "bn.net",
        "model t { input x: [4, 5, 7]\n b: batchnorm(eps=0.00001) }",
        &Options::default(),
    )
    .unwrap();
    let params = params_f32(&Weights::init(&spec.graph, 7));
    let prims = lower_with(&spec.graph, 3, Mode::Training);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let x = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5, 7]), |i| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        // Channel c centred at ±(c + 1) · 100, standard deviation about 0.29.
        let c = i[1] as f32;
        (c + 1.0) * 100.0 * if i[1] % 2 == 0 { 1.0 } else { -1.0 } + unit
    });
    let params64: Vec<ArrayD<f64>> = params.iter().map(|p| p.mapv(f64::from)).collect();
    let want = netc::reference::run::<f64>(&prims, &params64, &[("x", x.mapv(f64::from))]).unwrap();
    let mut exe = Executable::new(netc::fuse::fuse(&prims), &params, jit().unwrap(), 2).unwrap();
    let got = exe.run(&[("x", &x)]).unwrap();
    let mut checked = 0;
    for ((name, got), want) in got.iter().zip(&want) {
        if name.ends_with("running_var") {
            // running = 0.9 · 1 + 0.1 · unbiased batch variance: the batch variance back.
            for (&g, &w) in got.iter().zip(want.iter()) {
                let (g, w) = ((f64::from(g) - 0.9) / 0.1, (w - 0.9) / 0.1);
                let err = (g - w).abs() / w;
                assert!(err <= 1e-4, "{name}: batch variance {g} vs {w} ({err:e})");
            }
            checked += 1;
        } else {
            // The normalized output (about 1; the mean itself is an f32 near 100-400).
            let err = got
                .iter()
                .zip(want.iter())
                .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
                .fold(0.0, f64::max);
            assert!(err <= 1e-3, "{name}: worst error {err:e}");
        }
    }
    assert_eq!(checked, 1, "the running variance is an output");
}

/// A shared module applied to several inputs (specs/triplet.net's `embed(anchor)`,
/// `embed(positive)`, `embed(negative)`) normalizes all its applications with one set of batch
/// statistics, as one batch of all of them, and updates its running statistics once from it;
/// applied to its own output it keeps one set per application. Through the reference
/// interpreter (f64) and the JIT (f32).
#[test]
fn shared_batchnorm_normalizes_its_applications_together() {
    let src = "
block emb() { bn: batchnorm(eps=0.00001) }
model t {
  input a: [2, 1, 3]
  input b: [2, 1, 3]
  e = shared emb()
  ea = e(a)
  eb = e(b)
  output ea, eb
}
model chain {
  input a: [2, 1, 3]
  e = shared emb()
  x = e(a)
  y = e(x)
  output x, y
}";
    let (batch, c, w) = (4usize, 2usize, 3usize);
    // Input b is input a shifted by 3 and scaled by 2: separate statistics would make the two
    // outputs equal; one set over both keeps them apart.
    let a = ArrayD::from_shape_fn(IxDyn(&[batch, c, 1, w]), |i| {
        ((i[0] * 7 + i[1] * 3 + i[3] * 5) % 11) as f64 / 11.0 - 0.4 + i[1] as f64
    });
    let b = a.mapv(|v| 2.0 * v + 3.0);
    let opts = |m: &str| Options {
        model: Some(m.to_string()),
        ..Options::default()
    };
    let lg = netc::load_str("t.net", src, &opts("t")).unwrap().graph;
    let prims = lower_with(&lg, batch, Mode::Training);
    let params = params_f32(&Weights::init(&lg, 1));
    let params64: Vec<ArrayD<f64>> = params.iter().map(|p| p.mapv(f64::from)).collect();
    let got = netc::reference::run::<f64>(&prims, &params64, &[("a", a.clone()), ("b", b.clone())])
        .unwrap();
    let names: Vec<&str> = prims.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["ea", "eb", "e.bn.running_mean", "e.bn.running_var"],
        "one running-statistics update per step"
    );
    // Expected: per channel, the mean and biased variance over both inputs' values.
    let n = (2 * batch * w) as f64;
    for ch in 0..c {
        let vals: Vec<f64> = [&a, &b]
            .iter()
            .flat_map(|x| (0..batch).flat_map(move |s| (0..w).map(move |k| x[[s, ch, 0, k]])))
            .collect();
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        for (x, out) in [(&a, &got[0]), (&b, &got[1])] {
            for s in 0..batch {
                for k in 0..w {
                    let want = (x[[s, ch, 0, k]] - mean) / (var + 1e-5).sqrt();
                    let d = (out[[s, ch, 0, k]] - want).abs();
                    assert!(d < 1e-9, "channel {ch}: {} vs {want}", out[[s, ch, 0, k]]);
                }
            }
        }
        let rm = got[2][[ch]];
        // (momentum and the factors are f32 constants in the graph)
        assert!(
            (rm - 0.1 * mean).abs() < 1e-6,
            "running mean {rm} vs {}",
            0.1 * mean
        );
        let rv = got[3][[ch]];
        let want_rv = 0.9 + 0.1 * var * n / (n - 1.0);
        assert!((rv - want_rv).abs() < 1e-6, "running var {rv} vs {want_rv}");
    }
    // The JIT runs the same graph.
    let mut exe = Executable::new(netc::fuse::fuse(&prims), &params, jit().unwrap(), 2).unwrap();
    let (af, bf) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
    let jit_out = exe.run(&[("a", &af), ("b", &bf)]).unwrap();
    for ((name, g), want) in jit_out.iter().zip(&got) {
        let err = g
            .iter()
            .zip(want.iter())
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-4, "{name}: JIT differs by {err:e}");
    }

    // Applied to its own output: each application its own statistics (so each is normalized
    // to mean 0 per channel).
    let lg = netc::load_str("t.net", src, &opts("chain")).unwrap().graph;
    let prims = lower_with(&lg, batch, Mode::Training);
    let got = netc::reference::run::<f64>(&prims, &params64, &[("a", a.clone())]).unwrap();
    for out in &got[..2] {
        for ch in 0..c {
            let m: f64 = (0..batch)
                .flat_map(|s| (0..w).map(move |k| (s, k)))
                .map(|(s, k)| out[[s, ch, 0, k]])
                .sum::<f64>()
                / (batch * w) as f64;
            assert!(m.abs() < 1e-9, "channel {ch} mean {m}");
        }
    }
}
