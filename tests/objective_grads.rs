//! Training objectives (`train { loss: ... }`) against PyTorch: every loss alone on a named
//! output, and weighted sums over several outputs, on the stored cases of
//! `tests/data/objectives/` (written by its `make_cases.py`). Each case is a small spec (its
//! `.net`, whose `loss:` is the objective) and a `.safetensors` of parameters, inputs, targets,
//! and PyTorch's loss and gradients (float64, rounded to f32). netc builds the training graph of
//! the spec's own objective and runs it through the compiled executable (f32) and the reference
//! interpreter (f64), and steps the library's `Trainer` once; the loss, every parameter
//! gradient and every updated batchnorm running statistic must match within 1e-4.
//!
//! The detection objectives (`make_detection_cases.py`): masked per-sample terms, the
//! localization objective, the YOLO loss (its targets encoded by PyTorch's side and, checked
//! here, by netc's `detect::encode` identically).

use std::collections::{BTreeSet, HashMap};

use ndarray::{ArrayD, IxDyn};
use netc::io::weights::{Value, Weights};
use netc::layer_graph::ParamKind;
use netc::model::jit;
use netc::runtime::Executable;
use netc::train::graph::objective_of;
use netc::train::{TrainGraph, Trainer, build};
use netc::train_config::{Objective, Optimizer};
use netc::{Options, load_file};

const DIR: &str = "tests/data/objectives";

/// Every case `make_cases.py` and `make_detection_cases.py` write: each loss alone, then
/// weighted combinations, then the detection objectives.
const CASES: [&str; 26] = [
    "cross_entropy",
    "ce_smoothing",
    "ce_fcn",
    "mse",
    "l1",
    "bce",
    "triplet",
    "contrastive",
    "style",
    "content",
    "value",
    "cls_box",
    "three_terms",
    "shared_target",
    "style_content",
    "value_weighted",
    "gatys",
    "siamese",
    "ce_masked",
    "mse_masked",
    "l1_masked",
    "bce_masked",
    "mask_all_zero",
    "localize",
    "yolo",
    "yolo_weighted",
];

/// The cases whose objective has several terms.
const COMBINATIONS: [&str; 8] = [
    "cls_box",
    "three_terms",
    "shared_target",
    "style_content",
    "value_weighted",
    "gatys",
    "siamese",
    "localize",
];

/// The error bound, relative (see [`rel_err`]).
const TOL: f64 = 1e-4;

/// ‖got − want‖₂ / ‖want‖₂ over one whole tensor. Per tensor rather than per element: a
/// gradient has elements that are zero or rounding-sized (ReLU-masked units, a batchnorm's
/// cancelled directions), where an element's relative error means nothing, while the tensor's
/// norm is the scale the optimizer's step sees; an error that matters to training (a wrong
/// weight, a missing term, a wrong element) moves this ratio.
fn rel_err(got: &ArrayD<f64>, want: &ArrayD<f64>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|b| b.powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// The f32 tensors of a safetensors file (as f64), and its i64 scalars.
fn tensors(path: &str) -> (HashMap<String, ArrayD<f64>>, HashMap<String, i64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (mut f, mut ints) = (HashMap::new(), HashMap::new());
    for (name, t) in st.tensors() {
        match t.dtype() {
            safetensors::Dtype::F32 => {
                let v: Vec<f64> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect();
                f.insert(name, ArrayD::from_shape_vec(IxDyn(t.shape()), v).unwrap());
            }
            safetensors::Dtype::I64 if t.shape().is_empty() => {
                let b: [u8; 8] = t.data().try_into().unwrap();
                ints.insert(name, i64::from_le_bytes(b));
            }
            other => panic!("{path}: {name} has dtype {other:?}"),
        }
    }
    (f, ints)
}

/// One case, loaded: the training graph of the spec's objective and its feeds.
struct Case {
    name: &'static str,
    lg: netc::layer_graph::LayerGraph,
    objective: Objective,
    params: Vec<ArrayD<f64>>,
    /// PyTorch's `num_batches_tracked` after the step, by buffer path.
    counts: HashMap<String, i64>,
    feeds: Vec<(String, ArrayD<f64>)>,
    want: HashMap<String, ArrayD<f64>>,
}

fn load(name: &'static str) -> Case {
    let spec = load_file(format!("{DIR}/{name}.net"), &Options::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let lg = spec.graph;
    let objective = objective_of(&lg);
    let (t, ints) = tensors(&format!("{DIR}/{name}.safetensors"));
    // The parameters map 1:1: every one netc has is in the case, and nothing else is.
    let mut used = BTreeSet::new();
    let params = lg
        .params
        .iter()
        .map(|p| {
            let key = format!("param/{}", p.path);
            used.insert(key.clone());
            if p.kind == ParamKind::NumBatchesTracked {
                // An i64 counter: the graph never reads it (as `model::params_f32`).
                assert!(ints.contains_key(&key), "{name}: no {key}");
                return ArrayD::zeros(IxDyn(&[0]));
            }
            let v = t
                .get(&key)
                .unwrap_or_else(|| panic!("{name}: no {key}"))
                .clone();
            assert_eq!(v.shape(), p.shape.as_slice(), "{name}: {key}");
            v
        })
        .collect();
    let stored: BTreeSet<String> = t
        .keys()
        .chain(ints.keys())
        .filter(|k| k.starts_with("param/"))
        .cloned()
        .collect();
    assert_eq!(stored, used, "{name}: PyTorch's parameters are netc's");
    let mut feeds: Vec<(String, ArrayD<f64>)> = lg
        .inputs
        .iter()
        .map(|i| {
            let a = t
                .get(&format!("input/{}", i.name))
                .unwrap_or_else(|| panic!("{name}: no input {}", i.name));
            (i.name.clone(), a.clone())
        })
        .collect();
    let want = t
        .iter()
        .filter(|(k, _)| k.as_str() == "loss" || k.contains('/') && !k.starts_with("param/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<HashMap<_, _>>();
    let targets: BTreeSet<&str> = want
        .keys()
        .filter_map(|k| k.strip_prefix("target/"))
        .collect();
    feeds.extend(
        targets
            .iter()
            .map(|k| (k.to_string(), want[&format!("target/{k}")].clone())),
    );
    let counts = ints
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("batches/")?.to_string(), *v)))
        .collect();
    Case {
        name,
        lg,
        objective,
        params,
        counts,
        feeds,
        want,
    }
}

impl Case {
    fn batch(&self) -> usize {
        self.feeds[0].1.shape()[0]
    }

    fn graph(&self, objective: &Objective) -> TrainGraph {
        let tg = build(&self.lg, self.batch(), objective)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        // The objective's target inputs are exactly the ones PyTorch's loss read.
        let mut netc_targets = tg.target_inputs.clone();
        netc_targets.sort();
        let mut torch_targets: Vec<String> = self
            .want
            .keys()
            .filter_map(|k| k.strip_prefix("target/").map(String::from))
            .collect();
        torch_targets.sort();
        assert_eq!(netc_targets, torch_targets, "{}: target inputs", self.name);
        tg
    }

    /// The graph's outputs by the oracle in f64.
    fn oracle(&self, tg: &TrainGraph) -> HashMap<String, ArrayD<f64>> {
        let feeds: Vec<(&str, ArrayD<f64>)> = self
            .feeds
            .iter()
            .map(|(n, a)| (n.as_str(), a.clone()))
            .collect();
        let outs = netc::reference::run::<f64>(&tg.prims, &self.params, &feeds)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        tg.prims
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(outs)
            .collect()
    }

    /// The graph's outputs by the compiled executable (f32, 2 threads).
    fn jit(&self, tg: &TrainGraph) -> HashMap<String, ArrayD<f64>> {
        let to32 = |a: &ArrayD<f64>| a.mapv(|v| v as f32);
        let params: Vec<ArrayD<f32>> = self.params.iter().map(to32).collect();
        let fused = netc::fuse::fuse_with(&tg.prims, &tg.variable);
        let mut exe = Executable::new(fused, &params, jit().unwrap(), 2)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let feeds32: Vec<(&str, ArrayD<f32>)> = self
            .feeds
            .iter()
            .map(|(n, a)| (n.as_str(), to32(a)))
            .collect();
        let feeds: Vec<(&str, &ArrayD<f32>)> = feeds32.iter().map(|(n, a)| (*n, a)).collect();
        exe.run(&feeds)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
            .into_iter()
            .map(|(n, a)| (n, a.mapv(f64::from)))
            .collect()
    }

    /// The relative error of the loss, of every gradient (by parameter path) and of every
    /// updated running statistic, after checking that netc and PyTorch differentiate the same
    /// parameters and update the same statistics.
    ///
    /// Some gradients are exactly zero in exact arithmetic: the bias of the last layer of an
    /// embedding that a triplet or contrastive loss only ever sees in differences `f(a) - f(p)`.
    /// PyTorch's value there is float64 rounding (~1e-17), so a ratio to it means nothing; such
    /// a tensor (norm below 1e-9 of the case's largest gradient) must instead be zero to 1e-6 of
    /// that largest gradient, and is reported with its error relative to that scale.
    fn errors(&self, tg: &TrainGraph, got: &HashMap<String, ArrayD<f64>>) -> Vec<(String, f64)> {
        let netc_grads: BTreeSet<String> = tg
            .grads
            .iter()
            .map(|(i, _)| self.lg.params[*i].path.clone())
            .collect();
        let torch_grads: BTreeSet<String> = self
            .want
            .keys()
            .filter_map(|k| k.strip_prefix("grad/").map(String::from))
            .collect();
        assert_eq!(
            netc_grads, torch_grads,
            "{}: the parameters with a gradient",
            self.name
        );
        let norm = |a: &ArrayD<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = torch_grads
            .iter()
            .map(|p| norm(&self.want[&format!("grad/{p}")]))
            .fold(0.0, f64::max);
        let mut errs = vec![(
            "loss".to_string(),
            rel_err(&got["loss"], &self.want["loss"]),
        )];
        for (i, out) in &tg.grads {
            let path = &self.lg.params[*i].path;
            let want = &self.want[&format!("grad/{path}")];
            if norm(want) <= 1e-9 * scale {
                let e = norm(&(&got[out] - want)) / scale;
                assert!(
                    e <= 1e-6,
                    "{}: {path}: PyTorch's gradient is 0, netc's {e:.1e} of the largest",
                    self.name
                );
                errs.push((format!("{path} (zero)"), e));
            } else {
                errs.push((path.clone(), rel_err(&got[out], want)));
            }
        }
        // The running statistics of every batchnorm the step updates (in training mode).
        let netc_stats: BTreeSet<String> = tg.stats.iter().map(|(_, n)| n.clone()).collect();
        let torch_stats: BTreeSet<String> = self
            .want
            .keys()
            .filter_map(|k| k.strip_prefix("stat/").map(String::from))
            .collect();
        assert_eq!(netc_stats, torch_stats, "{}: running statistics", self.name);
        for (_, out) in &tg.stats {
            let e = rel_err(&got[out], &self.want[&format!("stat/{out}")]);
            errs.push((out.clone(), e));
        }
        errs
    }
}

#[test]
fn every_objective_matches_pytorch_loss_and_gradients() {
    let (mut cases, mut tensors) = (0, 0);
    for name in CASES {
        let c = load(name);
        let tg = c.graph(&c.objective);
        let mut line = format!("{name:<14} {:<90}", c.objective.to_string());
        for (label, got) in [("jit", c.jit(&tg)), ("f64", c.oracle(&tg))] {
            let errs = c.errors(&tg, &got);
            let (worst_name, worst) = errs
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .cloned()
                .unwrap();
            for (what, e) in &errs {
                assert!(
                    *e <= TOL,
                    "{name} ({label}): {what}: relative error {e:.2e} > {TOL:e}"
                );
            }
            line += &format!("  {label} max {worst:.1e} ({worst_name})");
            tensors += errs.len();
        }
        println!("{line}");
        cases += 1;
    }
    println!(
        "{cases} cases, {tensors} tensors (loss, gradients, running statistics; each through the JIT and the f64 oracle) within {TOL:e} of PyTorch"
    );
    assert_eq!(cases, CASES.len());
}

/// The comparison above can fail: with any one term of a combination weighted 1% off, the
/// loss or a gradient leaves the bound (each term contributes measurably to every case).
#[test]
fn a_wrong_weight_on_any_term_is_caught() {
    for name in COMBINATIONS {
        let c = load(name);
        assert!(c.objective.terms.len() >= 2, "{name}: a combination");
        for k in 0..c.objective.terms.len() {
            let mut wrong = c.objective.clone();
            wrong.terms[k].weight *= 1.01;
            let tg = c.graph(&wrong);
            let errs = c.errors(&tg, &c.oracle(&tg));
            let worst = errs.iter().map(|e| e.1).fold(0.0, f64::max);
            println!(
                "{name}: term {k} ({}) × 1.01: max error {worst:.1e}",
                wrong.terms[k]
            );
            assert!(
                worst > 10.0 * TOL,
                "{name}: term {k} weighted 1% off goes unnoticed (max error {worst:.1e})"
            );
        }
    }
}

/// The same through the library's `Trainer` (named feeds, one SGD step): its loss and the
/// step's gradients match PyTorch, and the batchnorm state it keeps is PyTorch's after the
/// step, a shared batchnorm (the siamese case's, applied to both inputs) included: running
/// statistics updated once per application, each from the one before, and
/// `num_batches_tracked` counting applications.
#[test]
fn the_trainer_steps_on_every_objective_as_pytorch() {
    let (mut checked, mut counters) = (0, 0);
    for name in CASES {
        let c = load(name);
        let values =
            c.lg.params
                .iter()
                .zip(&c.params)
                .map(|(p, v)| match p.kind {
                    ParamKind::NumBatchesTracked => Value::I64(ArrayD::zeros(IxDyn(&p.shape))),
                    _ => Value::F32(v.mapv(|x| x as f32)),
                })
                .collect();
        let sgd = Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut tr = Trainer::new(
            &c.lg,
            Weights { values },
            c.batch(),
            c.objective.clone(),
            sgd,
            1,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let feeds32: Vec<(&str, Vec<f32>)> = c
            .feeds
            .iter()
            .map(|(n, a)| (n.as_str(), a.iter().map(|&v| v as f32).collect()))
            .collect();
        let feeds: Vec<(&str, &[f32])> = feeds32.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let loss = tr
            .step_feed(&feeds, 0.1)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let want = c.want["loss"].iter().next().copied().unwrap();
        let e = (loss as f64 - want).abs() / want.abs();
        assert!(e <= TOL, "{name}: trainer loss {loss} vs {want}");
        let tg = tr.graph().clone();
        let mut got: HashMap<String, ArrayD<f64>> = HashMap::new();
        got.insert("loss".into(), ArrayD::from_elem(IxDyn(&[1]), loss as f64));
        for (i, out) in &tg.grads {
            let shape = &c.lg.params[*i].shape;
            let v: Vec<f64> = tr.output(out).unwrap().iter().map(|&x| x as f64).collect();
            got.insert(
                out.clone(),
                ArrayD::from_shape_vec(IxDyn(shape), v).unwrap(),
            );
        }
        // The running statistics as the trainer keeps them after the step.
        let after = tr.weights();
        for (i, out) in &tg.stats {
            let v = after.values[*i].as_f32().unwrap().mapv(f64::from);
            got.insert(out.clone(), v);
        }
        for (what, e) in c.errors(&tg, &got) {
            assert!(e <= TOL, "{name} (trainer): {what}: relative error {e:.2e}");
            checked += 1;
        }
        for (i, p) in c.lg.params.iter().enumerate() {
            if p.kind == ParamKind::NumBatchesTracked {
                let want = c.counts[&p.path];
                let got = after.values[i].as_i64().unwrap().iter().next().copied();
                assert_eq!(got, Some(want), "{name}: {}", p.path);
                counters += 1;
            }
        }
    }
    println!("trainer: {checked} tensors and {counters} batch counters match PyTorch");
}

/// Two terms on one output share its targets when they need the same shape (the stored case
/// `shared_target`: `mse(output=box) + 0.5 * l1(output=box)`, one input `targets:box`); style
/// and content on one output need different ones, and the error says how to give them both.
#[test]
fn terms_on_one_output_share_its_targets_or_say_how_not_to() {
    let c = load("shared_target");
    assert_eq!(
        c.graph(&c.objective).target_inputs,
        ["targets:cls", "targets:box"]
    );

    let src = "model m {\n input x: [3, 6, 6]\n c: conv(4, 3)\n f = relu\n output f\n \
               train { loss: content(output=f) + 10 * style(output=f) }\n}\n";
    let lg = netc::load_str("m.net", src, &Options::default())
        .unwrap()
        .graph;
    let err = build(&lg, 2, &objective_of(&lg)).unwrap_err();
    assert!(
        err.contains("the `10 * style(output=f)` loss and an earlier term on the output `f`")
            && err.contains("([2, 4, 4] and [2, 4, 4, 4])")
            && err.contains("`f_copy = f |> identity`, `output f_copy`"),
        "{err}"
    );
    // What it suggests works.
    let fixed = src
        .replace("output f\n", "f_copy = f |> identity\n output f, f_copy\n")
        .replace("content(output=f)", "content(output=f_copy)");
    let lg = netc::load_str("m.net", &fixed, &Options::default())
        .unwrap()
        .graph;
    let tg = build(&lg, 2, &objective_of(&lg)).unwrap();
    assert_eq!(tg.target_inputs, ["targets:f_copy", "targets:f"]);
}

/// The YOLO cases' boxes, as netc's objects per sample (the case's `objects` rows: sample,
/// class, cx, cy, w, h).
fn case_objects(name: &str, n: usize) -> Vec<Vec<netc::detect::Object>> {
    let (t, _) = tensors(&format!("{DIR}/{name}.safetensors"));
    let rows = &t["objects"];
    let mut objects = vec![Vec::new(); n];
    for r in rows.outer_iter() {
        objects[r[0] as usize].push(netc::detect::Object {
            class: r[1] as usize,
            cx: r[2] as f32,
            cy: r[3] as f32,
            w: r[4] as f32,
            h: r[5] as f32,
            landmarks: vec![],
        });
    }
    objects
}

/// The grid geometry of a YOLO case, from its spec's objective and shapes.
fn case_grid(c: &Case) -> netc::detect::encode::Grid {
    let netc::train_config::Loss::Yolo(y) = &c.objective.terms[0].loss else {
        panic!("{}: not a yolo objective", c.name)
    };
    let input = &c.lg.inputs[0].shape;
    let out = &c.lg.nodes[c.lg.outputs[0].1].shape;
    netc::detect::encode::Grid::new(
        &y.anchors,
        [input[1], input[2]],
        y.classes,
        [out[1], out[2]],
    )
}

/// netc's host-side encoding of the YOLO cases' boxes (cell, best anchor, offsets, log sizes,
/// one-hot class, a later box replacing an earlier one) is the target tensor PyTorch's side
/// encoded independently: boxes in one cell on different anchors, a centre on a cell border
/// and on the right edge, an image without boxes, two boxes on one cell and anchor.
#[test]
fn netc_encodes_the_yolo_targets_as_pytorch() {
    for name in ["yolo", "yolo_weighted"] {
        let c = load(name);
        let grid = case_grid(&c);
        let objects = case_objects(name, c.batch());
        let mut got = Vec::new();
        grid.encode(&objects, &mut got, &|i| format!("sample {i}"))
            .unwrap();
        let want = &c.want["target/yolo:grid"];
        assert_eq!(got.len(), want.len(), "{name}");
        let worst = got
            .iter()
            .zip(want.iter())
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        let responsible = got.iter().step_by(1).filter(|&&v| v == 1.0).count();
        println!(
            "{name}: {} target values, max difference {worst:.1e} ({responsible} ones)",
            got.len()
        );
        assert!(
            worst <= 1e-5,
            "{name}: encoded targets differ by {worst:.1e}"
        );
    }
}

/// The comparison catches a wrong assignment: the targets of the YOLO case with the anchors
/// swapped, the boxes moved one cell to the right, or the earlier of two boxes on one cell and
/// anchor kept instead of the later, each give a loss or gradient far outside the bound.
#[test]
fn a_wrong_yolo_assignment_is_caught() {
    let c = load("yolo");
    let tg = c.graph(&c.objective);
    let grid = case_grid(&c);
    let [sh, sw] = grid.cells;
    let (a, per) = (grid.anchors.len(), 5 + grid.classes);
    let good = c.feeds.iter().position(|(n, _)| n == "yolo:grid").unwrap();
    let t = c.feeds[good].1.clone();
    let n = c.batch();
    let mut swapped = t.clone();
    let mut shifted = t.clone();
    for s in 0..n {
        for k in 0..a * per {
            let other = ((k / per + 1) % a) * per + k % per;
            for r in 0..sh {
                for q in 0..sw {
                    swapped[[s, k, r, q]] = t[[s, other, r, q]];
                    shifted[[s, k, r, q]] = t[[s, k, r, (q + sw - 1) % sw]];
                }
            }
        }
    }
    // Earlier boxes win: encode each image's boxes in reverse order.
    let reversed: Vec<Vec<_>> = case_objects("yolo", n)
        .into_iter()
        .map(|mut o| {
            o.reverse();
            o
        })
        .collect();
    let mut first_wins = Vec::new();
    grid.encode(&reversed, &mut first_wins, &|i| format!("sample {i}"))
        .unwrap();
    let first_wins =
        ArrayD::from_shape_vec(t.raw_dim(), first_wins.iter().map(|&v| v as f64).collect())
            .unwrap();
    assert_ne!(
        first_wins, t,
        "the case has two boxes on one cell and anchor"
    );
    for (what, wrong) in [
        ("anchors swapped", swapped),
        ("one cell to the right", shifted),
        ("the earlier box kept", first_wins),
    ] {
        let mut bad = Case { ..load("yolo") };
        bad.feeds[good].1 = wrong;
        let errs = bad.errors(&tg, &bad.oracle(&tg));
        let worst = errs.iter().map(|e| e.1).fold(0.0, f64::max);
        println!("yolo, {what}: max error {worst:.1e}");
        assert!(
            worst > 10.0 * TOL,
            "{what} goes unnoticed (max error {worst:.1e})"
        );
    }
}
