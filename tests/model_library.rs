//! The model library in `specs/`: every spec elaborates, and the specs that reproduce a
//! PyTorch model produce exactly its state_dict (names, shapes, dtypes, order) and parameter
//! count.
//!
//! Reference data (copied from the PyTorch reference run, see `tests/data/reference/`):
//! - `tests/data/torchvision_state_dicts.json`: torchvision's state_dict entries, in order, and
//!   parameter counts for alexnet, vgg16, resnet18, resnet34, resnet50 and googlenet;
//! - `tests/data/reference/<model>/weights.safetensors`: the initial weights of the small
//!   reference models (lenet5, mini_resnet, mini_inception); only their headers are read here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netc::layer_graph::{DType, LayerGraph, Op, ParamKind};

/// One state_dict entry: (name, shape, dtype as PyTorch spells it).
type Entry = (String, Vec<usize>, String);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_path(path: &Path) -> LayerGraph {
    match netc::load_file(path, &netc::Options::default()) {
        Ok(spec) => spec.graph,
        Err(e) => panic!("{} does not elaborate:\n{e}", path.display()),
    }
}

fn load(name: &str) -> LayerGraph {
    load_path(&root().join("specs").join(format!("{name}.net")))
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::I64 => "int64",
    }
}

/// Our parameters and buffers, in creation order.
fn entries(g: &LayerGraph) -> Vec<Entry> {
    g.params
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                p.shape.clone(),
                dtype_name(p.dtype).to_string(),
            )
        })
        .collect()
}

fn show(e: &Entry) -> String {
    format!("{} {:?} {}", e.0, e.1, e.2)
}

/// Compares two ordered entry lists, reporting the first difference readably.
fn assert_same_entries(model: &str, ours: &[Entry], want: &[Entry]) {
    for (i, (o, w)) in ours.iter().zip(want).enumerate() {
        assert_eq!(
            o,
            w,
            "{model}: state_dict entry {i} differs\n  ours:        {}\n  torchvision: {}",
            show(o),
            show(w)
        );
    }
    if ours.len() != want.len() {
        let extra: Vec<String> = if ours.len() > want.len() {
            ours[want.len()..].iter().take(5).map(show).collect()
        } else {
            want[ours.len()..].iter().take(5).map(show).collect()
        };
        panic!(
            "{model}: {} state_dict entries, torchvision has {}; first unmatched: {}",
            ours.len(),
            want.len(),
            extra.join(", ")
        );
    }
}

struct TorchvisionModel {
    parameters: usize,
    state_dict: Vec<Entry>,
}

fn torchvision(model: &str) -> TorchvisionModel {
    let path = root().join("tests/data/torchvision_state_dicts.json");
    let text = std::fs::read_to_string(&path).expect("read torchvision_state_dicts.json");
    let all: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let m = &all[model];
    let parameters = m["parameters"].as_u64().expect("parameters") as usize;
    let state_dict = m["state_dict"]
        .as_array()
        .expect("state_dict")
        .iter()
        .map(|e| {
            let name = e[0].as_str().expect("name").to_string();
            let shape = e[1]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            let dtype = e[2].as_str().expect("dtype").to_string();
            (name, shape, dtype)
        })
        .collect();
    TorchvisionModel {
        parameters,
        state_dict,
    }
}

fn check_torchvision(model: &str) {
    let g = load(model);
    let want = torchvision(model);
    assert_same_entries(model, &entries(&g), &want.state_dict);
    assert_eq!(
        g.num_parameters(),
        want.parameters,
        "{model}: parameter count"
    );
    assert_eq!(
        g.num_trainable(),
        want.parameters,
        "{model}: all parameters are trainable"
    );
    // The classifier gives 1000 logits per sample.
    assert_eq!(g.outputs.len(), 1, "{model}: one output");
    assert_eq!(
        g.nodes[g.outputs[0].1].shape,
        vec![1000],
        "{model}: output shape"
    );
}

#[test]
fn alexnet_matches_torchvision() {
    check_torchvision("alexnet");
}

#[test]
fn vgg16_matches_torchvision() {
    check_torchvision("vgg16");
}

#[test]
fn resnet18_matches_torchvision() {
    check_torchvision("resnet18");
}

#[test]
fn resnet34_matches_torchvision() {
    check_torchvision("resnet34");
}

#[test]
fn resnet50_matches_torchvision() {
    check_torchvision("resnet50");
}

#[test]
fn googlenet_matches_torchvision() {
    check_torchvision("googlenet");
}

/// The entries of a safetensors header (name → shape, dtype), as PyTorch names the dtype.
fn safetensors_header(path: &Path) -> BTreeMap<String, (Vec<usize>, String)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header is JSON");
    let mut out = BTreeMap::new();
    for (name, info) in header.as_object().expect("header is an object") {
        if name == "__metadata__" {
            continue;
        }
        let shape = info["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        let dtype = match info["dtype"].as_str().expect("dtype") {
            "F32" => "float32",
            "I64" => "int64",
            other => panic!("{}: unexpected dtype {other}", path.display()),
        };
        out.insert(name.clone(), (shape, dtype.to_string()));
    }
    out
}

/// The parameter paths PyTorch's state_dict lists for a module list, in order: a module is
/// `conv` (weight), `conv+b` (weight, bias), `dense` (weight, bias) or `bn` (5 entries).
fn expected_order(modules: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, kind) in modules {
        let suffixes: &[&str] = match *kind {
            "conv" => &["weight"],
            "conv+b" | "dense" => &["weight", "bias"],
            "bn" => &[
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            ],
            other => panic!("unknown module kind {other}"),
        };
        for s in suffixes {
            out.push(format!("{path}.{s}"));
        }
    }
    out
}

fn check_reference(model: &str, order: &[(&str, &str)], params: usize) {
    let g = load(model);
    let header = safetensors_header(
        &root()
            .join("tests/data/reference")
            .join(model)
            .join("weights.safetensors"),
    );
    let ours: BTreeMap<String, (Vec<usize>, String)> = entries(&g)
        .into_iter()
        .map(|(n, s, d)| (n, (s, d)))
        .collect();
    assert_eq!(
        ours.len(),
        g.params.len(),
        "{model}: duplicate parameter paths"
    );
    let missing: Vec<&String> = header.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<&String> = ours.keys().filter(|k| !header.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{model}: reference entries we lack: {missing:?}; our entries not in the reference: {extra:?}"
    );
    for (name, want) in &header {
        assert_eq!(&ours[name], want, "{model}: `{name}` shape/dtype");
    }
    // safetensors sorts its header, so the order is checked against PyTorch's module
    // registration order written out here.
    let names: Vec<String> = g.params.iter().map(|p| p.path.clone()).collect();
    assert_eq!(names, expected_order(order), "{model}: state_dict order");
    assert_eq!(g.num_parameters(), params, "{model}: parameter count");
    let count: usize = header
        .iter()
        .filter(|(n, _)| {
            !n.ends_with("running_mean")
                && !n.ends_with("running_var")
                && !n.ends_with("num_batches_tracked")
        })
        .map(|(_, (s, _))| s.iter().product::<usize>())
        .sum();
    assert_eq!(count, params, "{model}: the reference's parameter count");
}

fn input_shape(g: &LayerGraph) -> Vec<usize> {
    g.inputs[0].shape.clone()
}

#[test]
fn lenet5_matches_reference() {
    check_reference(
        "lenet5",
        &[
            ("conv1", "conv+b"),
            ("conv2", "conv+b"),
            ("fc1", "dense"),
            ("fc2", "dense"),
            ("fc3", "dense"),
        ],
        61_706,
    );
    let g = load("lenet5");
    assert_eq!(input_shape(&g), vec![1, 28, 28]);
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![10]);
}

#[test]
fn mini_resnet_matches_reference() {
    let mut order = vec![("conv1".to_string(), "conv"), ("bn1".to_string(), "bn")];
    for (layer, down) in [("layer1", false), ("layer2", true)] {
        for b in 0..2 {
            let p = format!("{layer}.{b}");
            order.push((format!("{p}.conv1"), "conv"));
            order.push((format!("{p}.bn1"), "bn"));
            order.push((format!("{p}.conv2"), "conv"));
            order.push((format!("{p}.bn2"), "bn"));
            if down && b == 0 {
                order.push((format!("{p}.downsample.0"), "conv"));
                order.push((format!("{p}.downsample.1"), "bn"));
            }
        }
    }
    order.push(("fc".to_string(), "dense"));
    let order: Vec<(&str, &str)> = order.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    // conv1 216, bn1 16, layer1 2 * (2 * 576 + 2 * 16), layer2.0 1152 + 2304 + 128 (downsample)
    // + 3 * 32, layer2.1 2 * 2304 + 2 * 32, fc 170.
    let params = 216
        + 16
        + 2 * (2 * 576 + 2 * 16)
        + (1152 + 2304 + 128 + 3 * 32)
        + (2 * 2304 + 2 * 32)
        + 170;
    assert_eq!(params, 11_122);
    check_reference("mini_resnet", &order, params);
    let g = load("mini_resnet");
    assert_eq!(input_shape(&g), vec![3, 16, 16]);
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![10]);
}

#[test]
fn mini_inception_matches_reference() {
    let i = "inception3a";
    let order = [
        ("conv1.conv".to_string(), "conv"),
        ("conv1.bn".to_string(), "bn"),
        (format!("{i}.branch1.conv"), "conv"),
        (format!("{i}.branch1.bn"), "bn"),
        (format!("{i}.branch2.0.conv"), "conv"),
        (format!("{i}.branch2.0.bn"), "bn"),
        (format!("{i}.branch2.1.conv"), "conv"),
        (format!("{i}.branch2.1.bn"), "bn"),
        (format!("{i}.branch3.0.conv"), "conv"),
        (format!("{i}.branch3.0.bn"), "bn"),
        (format!("{i}.branch3.1.conv"), "conv"),
        (format!("{i}.branch3.1.bn"), "bn"),
        (format!("{i}.branch4.1.conv"), "conv"),
        (format!("{i}.branch4.1.bn"), "bn"),
        ("fc".to_string(), "dense"),
    ];
    let order: Vec<(&str, &str)> = order.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    // conv1 432 + 32; branch1 128 + 16; branch2 96 + 12, 432 + 16; branch3 64 + 8, 144 + 8;
    // branch4 64 + 8; fc 240 + 10.
    let params = 464 + 144 + 108 + 448 + 72 + 152 + 72 + 250;
    assert_eq!(params, 1_710);
    check_reference("mini_inception", &order, params);
    let g = load("mini_inception");
    assert_eq!(input_shape(&g), vec![3, 15, 15]);
    // 15 -> conv stride 2 -> 8 -> maxpool 3/2 ceil -> 4; 8 + 8 + 4 + 4 channels.
    let concat = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::Concat))
        .expect("a concat node");
    assert_eq!(concat.shape, vec![24, 4, 4]);
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![10]);
}

#[test]
fn edge_detect_has_fixed_sobel_filters() {
    let g = load("edge_detect");
    assert_eq!(g.num_trainable(), 0, "no trainable parameters");
    assert_eq!(g.params.len(), 1, "only the conv weight: {:?}", entries(&g));
    let w = &g.params[0];
    assert_eq!(w.path, "sobel.weight");
    assert_eq!(w.shape, vec![2, 1, 3, 3]);
    assert_eq!(w.kind, ParamKind::Weight);
    assert!(!w.trainable);
    #[rustfmt::skip]
    let sobel: Vec<f32> = vec![
        -1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0,
        -1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0,
    ];
    assert_eq!(w.fixed.as_deref(), Some(sobel.as_slice()));
    assert_eq!(input_shape(&g), vec![1, 28, 28]);
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![2, 28, 28]);
}

#[test]
fn triplet_shares_one_embedding_network() {
    let g = load("triplet");
    let inputs: Vec<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["anchor", "positive", "negative"]);
    // One set of parameters, all under the shared module's name.
    let mut paths: Vec<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.iter().all(|p| p.starts_with("embed.")), "{paths:?}");
    let n = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), n, "parameters created once");
    assert!(paths.contains(&"embed.conv1.weight"));
    assert!(paths.contains(&"embed.fc.weight"));
    // Sized for the bundled Fashion-MNIST: three 1×28×28 inputs.
    assert!(g.inputs.iter().all(|i| i.shape == vec![1, 28, 28]));
    // conv1 288, bn1 64, conv2 18432, bn2 128, fc 64*(64*7*7) + 64.
    assert_eq!(g.num_parameters(), 288 + 64 + 18_432 + 128 + 64 * 3136 + 64);
    // Three applications, each using the same parameter ids.
    let fc_uses: Vec<&Vec<usize>> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Dense { .. }))
        .map(|n| &n.params)
        .collect();
    assert_eq!(fc_uses.len(), 3, "the embedding applied three times");
    assert!(fc_uses.iter().all(|p| *p == fc_uses[0]));
    // The output is the loss.
    assert_eq!(g.outputs.len(), 1);
    assert_eq!(g.outputs[0].0, "loss");
    let loss = &g.nodes[g.outputs[0].1];
    assert!(
        matches!(loss.op, Op::TripletLoss { margin } if (margin - 0.2).abs() < 1e-12),
        "{:?}",
        loss.op
    );
    assert_eq!(loss.inputs.len(), 3);
    for &i in &loss.inputs {
        assert_eq!(g.nodes[i].shape, vec![64], "embeddings are 64-dimensional");
        assert!(matches!(g.nodes[i].op, Op::L2Normalize { .. }));
    }
}

#[test]
fn triplet_takes_faces_through_overrides() {
    let opts = netc::Options::with_sets(&["channels=3", "size=96", "embedding=128"]).unwrap();
    let g = netc::load_file(root().join("specs/triplet.net"), &opts)
        .unwrap_or_else(|e| panic!("{e}"))
        .graph;
    assert!(g.inputs.iter().all(|i| i.shape == vec![3, 96, 96]));
    let loss = &g.nodes[g.outputs[0].1];
    assert!(loss.inputs.iter().all(|&i| g.nodes[i].shape == vec![128]));
}

#[test]
fn siamese_learns_a_similarity_of_one_shared_embedding() {
    let g = load("siamese");
    let inputs: Vec<(&str, &Vec<usize>)> = g
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), &i.shape))
        .collect();
    assert_eq!(inputs, [("x1", &vec![1, 28, 28]), ("x2", &vec![1, 28, 28])]);
    // The embedding's parameters once (triplet.net's face_net), then the head's.
    let paths: Vec<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
    let embed = paths.iter().filter(|p| p.starts_with("embed.")).count();
    assert_eq!(embed, load("triplet").params.len(), "{paths:?}");
    assert_eq!(&paths[embed..], ["logit.weight", "logit.bias"]);
    assert_eq!(
        g.num_parameters(),
        load("triplet").num_parameters() + 64 + 1
    );
    // One logit = dense(|f(x1) - f(x2)|), f applied to each input with the same parameters.
    assert_eq!(g.outputs.len(), 1);
    assert_eq!(g.outputs[0].0, "logit");
    let logit = &g.nodes[g.outputs[0].1];
    assert!(matches!(logit.op, Op::Dense { .. }), "{:?}", logit.op);
    assert_eq!(logit.shape, vec![1]);
    let abs = &g.nodes[logit.inputs[0]];
    assert!(matches!(abs.op, Op::Abs), "{:?}", abs.op);
    let sub = &g.nodes[abs.inputs[0]];
    assert!(matches!(sub.op, Op::Sub), "{:?}", sub.op);
    let (f1, f2) = (&g.nodes[sub.inputs[0]], &g.nodes[sub.inputs[1]]);
    assert!(matches!(f1.op, Op::L2Normalize { .. }) && matches!(f2.op, Op::L2Normalize { .. }));
    assert_eq!(f1.shape, vec![64]);
    let dense: Vec<&Vec<usize>> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Dense { .. }) && n.path == "embed.fc")
        .map(|n| &n.params)
        .collect();
    assert_eq!(dense.len(), 2);
    assert_eq!(dense[0], dense[1]);
    let t = g.train.as_ref().expect("a train section");
    assert_eq!(t.loss, Some(netc::train_config::Loss::BceWithLogits.into()));
}

#[test]
fn vgg_small_uses_blocks_and_train_settings() {
    use netc::train_config::Augment;
    let g = load("vgg_small");
    let names: Vec<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        &names[..2],
        ["stage1.convs.0.conv.weight", "stage1.convs.0.bn.weight"]
    );
    assert!(names.contains(&"stage3.convs.2.conv.weight"));
    assert!(!names.contains(&"stage3.convs.3.conv.weight"));
    assert!(names.contains(&"classifier.3.bias"));
    assert_eq!(input_shape(&g), vec![3, 32, 32]);
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![10]);
    let t = g.train.as_ref().expect("train section");
    assert_eq!(
        t.augment,
        vec![
            Augment::Mirror { p: 0.5 },
            Augment::RandomCrop { pad: 4, size: None }
        ]
    );
    assert_eq!(t.freeze, vec!["stage1".to_string()]);
}

#[test]
fn every_spec_elaborates() {
    let dir = root().join("specs");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read specs/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("net" | "yaml" | "yml")
            )
        })
        .collect();
    specs.sort();
    assert!(
        specs.len() >= 12,
        "expected the model library, found {specs:?}"
    );
    let mut failures = Vec::new();
    for p in &specs {
        match netc::load_file(p, &netc::Options::default()) {
            Ok(s) => assert!(!s.graph.nodes.is_empty(), "{}", p.display()),
            Err(e) => failures.push(format!("{}:\n{e}", p.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn classes_and_size_can_be_overridden() {
    for (model, size) in [("resnet50", 160), ("googlenet", 96), ("vgg16", 64)] {
        let path = root().join("specs").join(format!("{model}.net"));
        let opts =
            netc::Options::with_sets(&["classes=10".to_string(), format!("size={size}")]).unwrap();
        let g = match netc::load_file(&path, &opts) {
            Ok(s) => s.graph,
            Err(e) => panic!("{model} with classes=10, size={size}:\n{e}"),
        };
        assert_eq!(g.nodes[g.outputs[0].1].shape, vec![10], "{model}");
        assert_eq!(input_shape(&g), vec![3, size, size], "{model}");
    }
}
