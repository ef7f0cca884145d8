//! Snapshots of the elaborated graph of every shipped spec, and the equivalence of every YAML
//! twin with its `.net` original.

use std::path::{Path, PathBuf};

use netc::{Options, load_file, show};

fn specs(ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn elaborated_graph_of_every_spec() {
    let all = specs("net");
    assert!(all.len() >= 10, "expected the model library in specs/");
    for path in all {
        let spec = load_file(&path, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        insta::assert_snapshot!(format!("graph_{name}"), show::graph_text(&spec.graph));
    }
}

#[test]
fn fused_graph_of_every_spec() {
    for path in specs("net") {
        let spec = load_file(&path, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let (_, fused) = netc::model::stages(&spec, 1);
        insta::assert_snapshot!(format!("fused_{name}"), netc::fuse::fused_text(&fused));
    }
}

#[test]
fn yaml_twins_elaborate_to_the_identical_graph() {
    let twins = specs("yaml");
    for want in ["lenet5", "resnet18", "googlenet"] {
        assert!(
            twins.iter().any(|p| p.file_stem().unwrap() == want),
            "specs/{want}.yaml is missing"
        );
    }
    for yaml in twins {
        let net = yaml.with_extension("net");
        let a = load_file(&net, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let b = load_file(&yaml, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        // The JSON form holds everything but source spans.
        assert_eq!(
            show::graph_json(&a.graph),
            show::graph_json(&b.graph),
            "{} and {} differ",
            net.display(),
            yaml.display()
        );
        assert_eq!(a.graph.train, b.graph.train);
        // And overrides act the same on both.
        let o = Options::with_sets(&["classes=7"]).unwrap();
        let a = load_file(&net, &o).unwrap();
        let b = load_file(&yaml, &o).unwrap();
        assert_eq!(show::graph_json(&a.graph), show::graph_json(&b.graph));
    }
}

/// The fused training graphs (forward in training mode, loss, backward) of the reference
/// models: a change in how training graphs fuse shows up here.
#[test]
fn fused_training_graphs() {
    for name in ["lenet5", "mini_resnet", "mini_inception"] {
        let spec = load_file(format!("specs/{name}.net"), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, fused) = netc::model::train_stages(&spec, 4).unwrap();
        insta::assert_snapshot!(
            format!("fused_train_{name}"),
            netc::fuse::fused_text(&fused)
        );
    }
}
