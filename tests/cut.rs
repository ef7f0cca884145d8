//! The graph cut (`netc::cut`): a prefix and a suffix compose to the whole model, for every
//! shipped spec at several cuts; the frozen-prefix boundary; errors.

use std::collections::HashSet;

use ndarray::{ArrayD, IxDyn};
use netc::cut::{frozen_prefix_boundary, prefix, suffix};
use netc::io::weights::Weights;
use netc::layer_graph::{LayerGraph, NodeId};
use netc::model::params_f32;
use netc::{Options, load_file};

/// Deterministic pseudo-random values in [-1, 1).
fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

fn run(
    lg: &LayerGraph,
    params: &[ArrayD<f32>],
    inputs: &[(String, ArrayD<f32>)],
) -> Vec<ArrayD<f32>> {
    let batch = inputs[0].1.shape()[0];
    let prims = netc::lower::lower(lg, batch);
    let feed: Vec<(&str, ArrayD<f32>)> = lg
        .inputs
        .iter()
        .map(|i| {
            let (_, x) = inputs.iter().find(|(n, _)| *n == i.name).unwrap();
            (i.name.as_str(), x.clone())
        })
        .collect();
    netc::reference::run::<f32>(&prims, params, &feed).unwrap_or_else(|e| panic!("{e}"))
}

/// The nodes among `nodes[0..=k]` used after `k` (by a later node or as an output): a cut.
fn live_after(lg: &LayerGraph, k: usize) -> Vec<NodeId> {
    let mut live: Vec<NodeId> = Vec::new();
    for v in 0..=k {
        let used_later = lg.nodes[k + 1..].iter().any(|n| n.inputs.contains(&v))
            || lg.outputs.iter().any(|&(_, o)| o == v);
        if used_later {
            live.push(v);
        }
    }
    live
}

#[test]
fn prefix_and_suffix_compose_to_the_whole_model() {
    let cases: &[(&str, &[&str], usize)] = &[
        ("lenet5", &[], 2),
        ("edge_detect", &["size=13"], 2),
        ("mini_resnet", &[], 2),
        ("mini_inception", &[], 2),
        ("resnet18", &["size=16", "classes=7"], 1),
        ("resnet34", &["size=16", "classes=5"], 1),
        ("resnet50", &["size=16", "classes=11"], 1),
        ("googlenet", &["size=32", "classes=9"], 1),
        ("alexnet", &["size=67", "classes=5"], 1),
        ("vgg16", &["size=32", "classes=10"], 1),
        ("vgg_small", &[], 2),
        ("triplet", &["size=16", "embedding=8"], 2),
    ];
    for &(name, sets, batch) in cases {
        let spec = load_file(
            format!("specs/{name}.net"),
            &Options::with_sets(sets).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let lg = &spec.graph;
        let params = params_f32(&Weights::init(lg, 3));
        let inputs: Vec<(String, ArrayD<f32>)> = lg
            .inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let mut shape = vec![batch];
                shape.extend(&inp.shape);
                (inp.name.clone(), random(&shape, i as u64 + 1))
            })
            .collect();
        let whole = run(lg, &params, &inputs);
        let n = lg.nodes.len();
        // Cuts at the input, a third, two thirds and just before the end.
        let cuts: HashSet<usize> = [0, n / 3, 2 * n / 3, n - 2].into_iter().collect();
        for k in cuts {
            let boundary: Vec<(String, NodeId)> = live_after(lg, k)
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("cut{i}"), v))
                .collect();
            let pre = prefix(lg, &boundary).unwrap();
            let suf = suffix(lg, &boundary).unwrap();
            // Densely renumbered, parameters whole.
            assert!(pre.nodes.iter().enumerate().all(|(i, n)| n.id == i));
            assert!(suf.nodes.iter().enumerate().all(|(i, n)| n.id == i));
            assert_eq!(pre.params, lg.params);
            assert_eq!(suf.params, lg.params);
            assert!(pre.nodes.len() <= k + 1, "{name} at {k}");
            let mid = run(&pre, &params, &inputs);
            let mut feed: Vec<(String, ArrayD<f32>)> =
                boundary.iter().map(|(b, _)| b.clone()).zip(mid).collect();
            feed.extend(inputs.iter().cloned());
            let got = run(&suf, &params, &feed);
            assert_eq!(got.len(), whole.len());
            for (g, w) in got.iter().zip(&whole) {
                assert_eq!(g, w, "{name} cut after node {k} ({})", lg.nodes[k].path);
            }
        }
    }
}

#[test]
fn suffix_inputs_have_the_boundary_shape_and_no_normalization() {
    let spec = load_file("specs/resnet18.net", &Options::default()).unwrap();
    let lg = &spec.graph;
    let fc = lg.nodes.iter().find(|n| n.path == "fc").unwrap();
    let feat = fc.inputs[0];
    let suf = suffix(lg, &[("feat".into(), feat)]).unwrap();
    assert_eq!(suf.inputs.len(), 1);
    assert_eq!(suf.inputs[0].name, "feat");
    assert_eq!(suf.inputs[0].shape, vec![512]);
    assert!(suf.inputs[0].mean.is_empty() && suf.inputs[0].std.is_empty());
    assert_eq!(suf.nodes.len(), 2, "the input and fc");
    assert_eq!(suf.outputs[0].1, 1);
    let pre = prefix(lg, &[("feat".into(), feat)]).unwrap();
    assert_eq!(pre.inputs, lg.inputs);
    assert_eq!(pre.outputs, vec![("feat".to_string(), pre.nodes.len() - 1)]);
    assert_eq!(pre.nodes.len(), lg.nodes.len() - 1);
}

#[test]
fn inputs_not_needed_are_dropped_and_needed_ones_stay() {
    // Triplet: the anchor's embedding as a prefix needs only the anchor; cutting there keeps
    // the positive and negative inputs in the suffix.
    let spec = load_file(
        "specs/triplet.net",
        &Options::with_sets(&["size=8"]).unwrap(),
    )
    .unwrap();
    let lg = &spec.graph;
    let first_l2 = lg
        .nodes
        .iter()
        .find(|n| n.op.name() == "l2_normalize")
        .unwrap()
        .id;
    let pre = prefix(lg, &[("emb".into(), first_l2)]).unwrap();
    assert_eq!(pre.inputs.len(), 1);
    assert_eq!(pre.inputs[0].name, "anchor");
    let suf = suffix(lg, &[("emb".into(), first_l2)]).unwrap();
    let names: Vec<&str> = suf.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["emb", "positive", "negative"]);
    assert_eq!(suf.inputs[1].mean, lg.inputs[1].mean);
}

#[test]
fn bad_cuts_are_errors() {
    let spec = load_file("specs/lenet5.net", &Options::default()).unwrap();
    let lg = &spec.graph;
    let e = prefix(lg, &[("x".into(), 999)]).unwrap_err();
    assert!(e.contains("node 999 is not in model `lenet5`"), "{e}");
    let e = suffix(lg, &[("x".into(), 1), ("x".into(), 2)]).unwrap_err();
    assert!(e.contains("`x` is given twice"), "{e}");
    assert!(prefix(lg, &[]).is_err());
    // A boundary named like an input the suffix still needs.
    let spec = load_file(
        "specs/triplet.net",
        &Options::with_sets(&["size=8"]).unwrap(),
    )
    .unwrap();
    let e = suffix(&spec.graph, &[("positive".into(), 3)]).unwrap_err();
    assert!(e.contains("`positive`"), "{e}");
}

fn frozen(spec: &str, sets: &[&str], selectors: &[&str]) -> LayerGraph {
    let mut lg = load_file(spec, &Options::with_sets(sets).unwrap())
        .unwrap()
        .graph;
    let sel: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
    netc::train::freeze(&mut lg, &sel).unwrap();
    lg
}

#[test]
fn the_frozen_prefix_boundary_is_the_latest_fixed_cut() {
    // Nothing frozen: no cut (conv1 is trainable).
    let lg = frozen("specs/resnet18.net", &[], &[]);
    assert_eq!(frozen_prefix_boundary(&lg), None);
    // Everything but fc: the flattened features feeding fc.
    let lg = frozen("specs/resnet18.net", &[], &["..6"]);
    let (_, b) = frozen_prefix_boundary(&lg).unwrap();
    let fc = lg.nodes.iter().find(|n| n.path == "fc").unwrap();
    assert_eq!(fc.inputs, vec![b]);
    assert_eq!(lg.nodes[b].shape, vec![512]);
    // conv1 and bn1 frozen: after bn1's relu and maxpool (a single live value).
    let lg = frozen("specs/resnet18.net", &[], &["..2"]);
    let (_, b) = frozen_prefix_boundary(&lg).unwrap();
    assert_eq!(lg.nodes[b].op.name(), "maxpool2d");
    // Inside layer1.0 the residual keeps two values live: the cut is never inside a block.
    let lg = frozen("specs/resnet18.net", &[], &["..2", "layer1.0.conv1"]);
    let (_, b2) = frozen_prefix_boundary(&lg).unwrap();
    assert_eq!(b2, b);
    // conv1 frozen but bn1 not: batchnorm in training mode stops the prefix at conv1.
    let lg = frozen("specs/resnet18.net", &[], &["conv1"]);
    let (p, _) = frozen_prefix_boundary(&lg).unwrap();
    assert_eq!(p, "conv1");
    // AlexNet with features and classifier.1 frozen: dropout (classifier.0) ends the prefix.
    let lg = frozen(
        "specs/alexnet.net",
        &["size=67", "classes=5"],
        &["features", "classifier.1"],
    );
    let (_, b) = frozen_prefix_boundary(&lg).unwrap();
    assert_eq!(lg.nodes[b + 1].op.name(), "dropout");
    // Everything frozen: the output itself is never the cut (nothing left to train).
    let lg = frozen("specs/lenet5.net", &[], &["..5"]);
    let (_, b) = frozen_prefix_boundary(&lg).unwrap();
    assert!(lg.outputs.iter().all(|&(_, o)| o != b));
    // Several inputs: no cut.
    let lg = frozen("specs/triplet.net", &["size=8"], &["embed"]);
    assert_eq!(frozen_prefix_boundary(&lg), None);
}
