//! Gradients and optimizer steps against PyTorch (`tests/data/reference/`, written by
//! `make_reference.py`): every parameter gradient of the three reference models, every single
//! op's `grad_inK`, through the reference interpreter and through the JIT; and the parameters
//! after 3 SGD, Adam and AdamW steps.

mod common;
use common::{REFERENCE_MODELS, reference_spec};
use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use netc::autodiff::backward;
use netc::graph::{BinaryOp, Graph, Op, ReduceOp};
use netc::io::weights::Weights;
use netc::model::{jit, params_f32};
use netc::runtime::Executable;
use netc::train::{Trainer, build};
use netc::train_config::{Loss, Optimizer};
use netc::{Options, load_str};

fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn tensors(path: &str) -> HashMap<String, ArrayD<f32>> {
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

struct Case {
    spec: netc::Spec,
    weights: Weights,
    x: ArrayD<f32>,
    labels: Vec<i64>,
    dir: String,
}

fn case(name: &str) -> Case {
    let spec = reference_spec(name);
    let dir = format!("tests/data/reference/{name}");
    let weights = Weights::load(format!("{dir}/weights.safetensors"), &spec.graph).unwrap();
    let x = netc::io::npy::read_f32(format!("{dir}/input.npy")).unwrap();
    let labels = netc::io::npy::read_i64(format!("{dir}/labels.npy"))
        .unwrap()
        .iter()
        .copied()
        .collect();
    Case {
        spec,
        weights,
        x,
        labels,
        dir,
    }
}

const MODELS: [&str; 4] = REFERENCE_MODELS;

#[test]
fn model_gradients_match_pytorch_through_oracle_and_jit() {
    for name in MODELS {
        let c = case(name);
        let lg = &c.spec.graph;
        let n = c.x.shape()[0];
        let tg = build(
            lg,
            n,
            &Loss::CrossEntropy {
                label_smoothing: 0.0,
            }
            .into(),
        )
        .unwrap();
        let want = tensors(&format!("{}/grads.safetensors", c.dir));
        let classes = tg.prims.shape(tg.prims.outputs[0].1)[1];
        let targets = netc::loss::one_hot(&c.labels, classes).unwrap();
        let params = params_f32(&c.weights);
        let outs = netc::reference::run::<f32>(
            &tg.prims,
            &params,
            &[("image", c.x.clone()), ("targets", targets.clone())],
        )
        .unwrap();
        let oracle: HashMap<String, ArrayD<f32>> = tg
            .prims
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(outs)
            .collect();
        let fused = netc::fuse::fuse_with(&tg.prims, &tg.variable);
        let mut exe = Executable::new(fused, &params, jit().unwrap(), 2).unwrap();
        let jitted: HashMap<String, ArrayD<f32>> = exe
            .run(&[("image", &c.x), ("targets", &targets)])
            .unwrap()
            .into_iter()
            .collect();
        // Every trainable parameter of the model has a gradient, and PyTorch has each.
        let trainable = lg.params.iter().filter(|p| p.trainable).count();
        assert_eq!(tg.grads.len(), trainable, "{name}: gradients");
        assert_eq!(want.len(), trainable, "{name}: PyTorch's gradients");
        for (label, got) in [("oracle", &oracle), ("jit", &jitted)] {
            let mut worst = 0.0f64;
            for (i, out) in &tg.grads {
                let path = &lg.params[*i].path;
                let e = rel_err(&got[out], &want[path]);
                assert!(e <= 1e-4, "{name} {label}: gradient of {path}: error {e:e}");
                worst = worst.max(e);
            }
            println!("{name:<15} {label:<6} worst gradient error {worst:.2e}");
        }
    }
}

/// Runs PyTorch op case `case` through the one-layer spec `src` (inputs `in0..` are the spec's
/// inputs, then its parameters) and checks every `grad_inK` of
/// `d(Σ out * upstream)`, via the oracle (f32 and f64) and the JIT.
fn grad_case(case: &str, src: &str, training: bool, batch_mean: bool) {
    let t = tensors(&format!("tests/data/reference/ops/{case}.safetensors"));
    let lg = load_str("case.net", src, &Options::default())
        .unwrap()
        .graph;
    let batch = t["in0"].shape()[0];
    let mode = if training {
        netc::lower::Mode::Training
    } else {
        netc::lower::Mode::Inference
    };
    let mut g = netc::lower::lower_with(&lg, batch, mode);
    let y = g.outputs[0].1;
    let yshape = g.shape(y).to_vec();
    let up = g.push(
        Op::Input {
            name: "upstream".into(),
        },
        vec![],
        t["upstream"].shape().to_vec(),
        "t",
    );
    g.inputs.push(("upstream".into(), up));
    // PyTorch reduces losses to a scalar mean; netc's loss layers keep one value per sample.
    let all: Vec<usize> = (0..yshape.len()).collect();
    let s = g.add(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: all,
        },
        vec![y],
        "t",
    );
    let s = if batch_mean {
        let k = g.add(
            Op::Scalar {
                value: batch as f32,
            },
            vec![],
            "t",
        );
        g.add(Op::Binary(BinaryOp::Div), vec![s, k], "t")
    } else {
        s
    };
    let yv = if batch_mean { s } else { y };
    let p = g.add(Op::Binary(BinaryOp::Mul), vec![yv, up], "t");
    let all: Vec<usize> = (0..g.shape(p).len()).collect();
    let loss = if all.is_empty() {
        p
    } else {
        g.add(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: all,
            },
            vec![p],
            "t",
        )
    };
    let n_in = lg.inputs.len();
    let mut wrt: Vec<(String, usize)> = Vec::new();
    for (i, info) in lg.inputs.iter().enumerate() {
        let v = g.inputs.iter().find(|(n, _)| n == &info.name).unwrap().1;
        wrt.push((format!("grad_in{i}"), v));
    }
    for (v, node) in g.nodes.iter().enumerate() {
        if let Op::Param { index } = node.op
            && lg.params[index].trainable
        {
            wrt.push((format!("grad_in{}", n_in + index), v));
        }
    }
    let ids: Vec<usize> = wrt.iter().map(|(_, v)| *v).collect();
    let grads = backward(&mut g, loss, None, &ids).unwrap();
    g.outputs = wrt
        .iter()
        .zip(&grads)
        .map(|((n, _), gv)| (n.clone(), gv.expect("a gradient")))
        .collect();
    let inputs: Vec<(&str, ArrayD<f32>)> = lg
        .inputs
        .iter()
        .enumerate()
        .map(|(i, info)| (info.name.as_str(), t[&format!("in{i}")].clone()))
        .chain(std::iter::once(("upstream", t["upstream"].clone())))
        .collect();
    // Buffers (running statistics) are not among PyTorch's inputs: they start at 0 and 1.
    let params: Vec<ArrayD<f32>> = lg
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| match t.get(&format!("in{}", n_in + i)) {
            Some(a) if p.trainable => a.clone(),
            _ => ArrayD::from_elem(
                IxDyn(&p.shape),
                if p.path.ends_with("running_var") {
                    1.0
                } else {
                    0.0
                },
            ),
        })
        .collect();
    let oracle = netc::reference::run::<f32>(&g, &params, &inputs).unwrap();
    let to64 = |a: &ArrayD<f32>| a.mapv(f64::from);
    let oracle64 = netc::reference::run::<f64>(
        &g,
        &params.iter().map(to64).collect::<Vec<_>>(),
        &inputs
            .iter()
            .map(|(n, a)| (*n, to64(a)))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let variable = vec![true; lg.params.len()];
    let mut exe = Executable::new(
        netc::fuse::fuse_with(&g, &variable),
        &params,
        jit().unwrap(),
        2,
    )
    .unwrap();
    let feed: Vec<(&str, &ArrayD<f32>)> = inputs.iter().map(|(n, a)| (*n, a)).collect();
    let jitted = exe.run(&feed).unwrap();
    for (k, (name, _)) in wrt.iter().enumerate() {
        let want = &t[name];
        let e32 = rel_err(&oracle[k], want);
        let e64 = rel_err(&oracle64[k].mapv(|v| v as f32), want);
        let ej = rel_err(&jitted[k].1, want);
        println!("{case:<18} {name}: oracle f32 {e32:.1e}, f64 {e64:.1e}, jit {ej:.1e}");
        for (label, e) in [("oracle f32", e32), ("oracle f64", e64), ("jit", ej)] {
            assert!(e <= 1e-4, "{case} {name} {label}: error {e:e}");
        }
    }
}

#[test]
fn single_op_gradients_match_pytorch() {
    grad_case(
        "conv2d_s2_p1",
        "model t { input x: [3, 11, 9]\n c: conv(5, 3, stride=2, pad=1) }",
        false,
        false,
    );
    grad_case(
        "conv2d_dil2_g2",
        "model t { input x: [4, 10, 10]\n c: conv(6, 3, pad=2, dilation=2, groups=2, bias=false) }",
        false,
        false,
    );
    grad_case(
        "conv2d_depthwise",
        "model t { input x: [6, 7, 7]\n c: conv(6, 3, pad=1, groups=6, bias=false) }",
        false,
        false,
    );
    grad_case(
        "maxpool3_s2_ceil",
        "model t { input x: [3, 10, 10]\n maxpool(3, stride=2, ceil=true) }",
        false,
        false,
    );
    grad_case(
        "avgpool3_s2_p1",
        "model t { input x: [3, 9, 9]\n avgpool(3, stride=2, pad=1) }",
        false,
        false,
    );
    grad_case(
        "adaptive_avgpool_6",
        "model t { input x: [2, 13, 13]\n adaptive_avgpool(6) }",
        false,
        false,
    );
    grad_case(
        "lrn5",
        "model t { input x: [8, 5, 5]\n lrn(5, alpha=0.0001, beta=0.75, k=2) }",
        false,
        false,
    );
    grad_case(
        "softmax_dim1",
        "model t { input x: [7]\n softmax }",
        false,
        false,
    );
    grad_case(
        "gram",
        "model t { input x: [5, 6, 7]\n gram }",
        false,
        false,
    );
    grad_case(
        "triplet_margin",
        "model t {\n input a: [16]\n input p: [16]\n input n: [16]\n \
         loss = triplet_loss(a, p, n, margin=0.2)\n output loss\n}",
        false,
        true,
    );
    grad_case(
        "batchnorm_train",
        "model t { input x: [4, 5, 5]\n b: batchnorm(eps=0.00001) }",
        true,
        false,
    );
}

#[test]
fn cross_entropy_gradient_matches_pytorch() {
    let t = tensors("tests/data/reference/ops/cross_entropy_ls.safetensors");
    let mut g = Graph::default();
    let x = g.push(Op::Input { name: "x".into() }, vec![], vec![4, 5], "x");
    g.inputs.push(("x".into(), x));
    let loss = netc::loss::cross_entropy(&mut g, x, 0.1);
    let grads = backward(&mut g, loss, None, &[x]).unwrap();
    g.outputs = vec![("grad".into(), grads[0].unwrap())];
    let targets = netc::loss::one_hot(&[1, 0, 3, 2], 5).unwrap();
    let up = t["upstream"].iter().next().copied().unwrap();
    let got =
        netc::reference::run::<f32>(&g, &[], &[("x", t["in0"].clone()), ("targets", targets)])
            .unwrap();
    let e = rel_err(&got[0].mapv(|v| v * up), &t["grad_in0"]);
    assert!(e <= 1e-5, "cross-entropy gradient error {e:e}");
}

#[test]
fn three_optimizer_steps_match_pytorch() {
    for name in MODELS {
        let c = case(name);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{}/meta.json", c.dir)).unwrap())
                .unwrap();
        let settings = [
            (
                "sgd",
                Optimizer::Sgd {
                    lr: 0.05,
                    momentum: 0.9,
                    dampening: 0.0,
                    nesterov: false,
                    weight_decay: 5e-4,
                },
            ),
            (
                "adam",
                Optimizer::Adam {
                    lr: 1e-3,
                    betas: [0.9, 0.999],
                    eps: 1e-8,
                    weight_decay: 0.0,
                },
            ),
            (
                "adamw",
                Optimizer::AdamW {
                    lr: 1e-3,
                    betas: [0.9, 0.999],
                    eps: 1e-8,
                    weight_decay: 0.01,
                },
            ),
        ];
        for (opt_name, opt) in settings {
            let lr = opt_lr(&opt);
            let n = c.x.shape()[0];
            let mut tr = Trainer::new(
                &c.spec.graph,
                c.weights.clone(),
                n,
                Loss::CrossEntropy {
                    label_smoothing: 0.0,
                },
                opt,
                1,
            )
            .unwrap();
            let losses: Vec<f64> = meta[format!("{opt_name}_losses")]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (s, want) in losses.iter().enumerate() {
                let st = tr.step(c.x.as_slice().unwrap(), &c.labels, lr).unwrap();
                let e = (st.loss as f64 - want).abs() / want.abs();
                assert!(
                    e <= 1e-5,
                    "{name} {opt_name} step {s}: loss {} vs {want}",
                    st.loss
                );
            }
            let want = tensors(&format!("{}/after_3_{opt_name}_steps.safetensors", c.dir));
            let grads = tensors(&format!("{}/grads.safetensors", c.dir));
            let got = tr.weights();
            let mut worst = 0.0f64;
            let mut noise = 0;
            for (i, p) in c.spec.graph.params.iter().enumerate() {
                let Some(w) = want.get(&p.path) else { continue };
                let g = got.values[i].as_f32().unwrap();
                // Some gradients are exactly zero in exact arithmetic (a batchnorm shift that
                // the next training-mode batchnorm cancels) and PyTorch's values there are
                // rounding noise (~1e-9). Adam normalizes that noise into full-size steps of
                // either sign, so those elements are compared only for staying within the
                // 3 steps' reach; all others must match to 1e-4.
                let (mut kept_got, mut kept_want) = (Vec::new(), Vec::new());
                if let Some(gr) = grads.get(&p.path) {
                    let max = gr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    for ((a, b), gv) in g.iter().zip(w.iter()).zip(gr.iter()) {
                        if gv.abs() <= 1e-5 * max {
                            noise += 1;
                            assert!(
                                (a - b).abs() as f64 <= 6.0 * lr + 1e-6,
                                "{name} {opt_name}: {} moved too far",
                                p.path
                            );
                        } else {
                            kept_got.push(*a);
                            kept_want.push(*b);
                        }
                    }
                } else {
                    kept_got.extend(g.iter());
                    kept_want.extend(w.iter());
                }
                let to_arr = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).unwrap();
                let e = rel_err(&to_arr(kept_got), &to_arr(kept_want));
                // Those noise-driven steps then shift what later layers see, so with Adam the
                // running means downstream of them differ a little more (measured: 2.9e-4 on
                // mini_inception); every trained parameter still matches to 1e-4.
                let tol = if p.kind.is_buffer() && opt_name != "sgd" {
                    1e-3
                } else {
                    1e-4
                };
                assert!(e <= tol, "{name} {opt_name}: {} error {e:e}", p.path);
                worst = worst.max(e);
            }
            let _ = noise;
            // num_batches_tracked counts the three steps, as PyTorch's does.
            for (i, p) in c.spec.graph.params.iter().enumerate() {
                if p.path.ends_with("num_batches_tracked") {
                    let v = got.values[i].as_i64().unwrap();
                    assert_eq!(v.iter().next().copied(), Some(3), "{}", p.path);
                }
            }
            println!("{name:<15} {opt_name:<6} worst parameter error after 3 steps {worst:.2e}");
        }
    }
}

fn opt_lr(o: &Optimizer) -> f64 {
    match o {
        Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => *lr,
    }
}

#[test]
fn single_thread_training_is_bit_identical() {
    let c = case("mini_resnet");
    let run = || {
        let mut tr = Trainer::new(
            &c.spec.graph,
            c.weights.clone(),
            4,
            Loss::CrossEntropy {
                label_smoothing: 0.1,
            },
            Optimizer::Adam {
                lr: 1e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
            },
            1,
        )
        .unwrap();
        for _ in 0..3 {
            tr.step(c.x.as_slice().unwrap(), &c.labels, 1e-3).unwrap();
        }
        tr.weights()
    };
    assert_eq!(run(), run());
}

#[test]
fn frozen_layers_get_no_gradient_keep_their_statistics_and_cost_no_backward_work() {
    let c = case("mini_resnet");
    let mut g = c.spec.graph.clone();
    let frozen = netc::train::freeze(&mut g, &["conv1".into(), "bn1".into()]).unwrap();
    assert_eq!(frozen, 3, "conv1.weight, bn1.weight, bn1.bias");
    let loss = Loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let full = build(&c.spec.graph, 4, &loss.clone().into()).unwrap();
    let tg = build(&g, 4, &loss.clone().into()).unwrap();
    // No gradient output, no running-statistic output for the frozen layers...
    for (i, _) in tg.grads.iter().chain(&tg.stats) {
        let p = &g.params[*i].path;
        assert!(!p.starts_with("conv1.") && !p.starts_with("bn1."), "{p}");
    }
    // ...and conv1's gradient primitives are gone from the graph (its input needs none).
    let count = |t: &netc::train::TrainGraph| {
        t.prims
            .nodes
            .iter()
            .filter(|n| matches!(n.op, netc::graph::Op::Conv2dBackwardWeight { .. }))
            .count()
    };
    assert_eq!(count(&full) - count(&tg), 1);
    let mut tr = Trainer::new(
        &g,
        c.weights.clone(),
        4,
        loss,
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-4,
        },
        1,
    )
    .unwrap();
    for _ in 0..2 {
        tr.step(c.x.as_slice().unwrap(), &c.labels, 0.1).unwrap();
    }
    let after = tr.weights();
    for (i, p) in g.params.iter().enumerate() {
        let same = after.values[i] == c.weights.values[i];
        let frozen = p.path.starts_with("conv1.") || p.path.starts_with("bn1.");
        assert_eq!(
            same, frozen,
            "{}: frozen values stay, the rest change",
            p.path
        );
    }
}
