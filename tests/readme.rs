//! The README's own examples work: the language tour's "write your own" model checks, and the
//! mistake shown there produces the diagnostic shown there.

use netc::{Options, load_str};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The code block that starts with `first_line`.
fn block_starting(readme: &str, first_line: &str) -> String {
    let start = readme.find(first_line).expect("example present in README");
    let rest = &readme[start..];
    rest[..rest.find("```").unwrap()].to_string()
}

#[test]
fn readme_small_vgg_checks() {
    let src = block_starting(&readme(), "// my_vgg.net");
    let spec = load_str("my_vgg.net", &src, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let g = &spec.graph;
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![10]);
    assert!(
        g.params
            .iter()
            .any(|p| p.path == "stage3.layers.2.0.weight")
    );
    let opts = Options::with_sets(&["classes=100"]).unwrap();
    let g = load_str("my_vgg.net", &src, &opts).unwrap().graph;
    assert_eq!(g.nodes[g.outputs[0].1].shape, vec![100]);
}

#[test]
fn readme_mistake_renders_as_shown() {
    let text = readme();
    let src = block_starting(&text, "// my_vgg.net").replace("  flatten\n", "");
    let err = load_str("my_vgg.net", &src, &Options::default())
        .unwrap_err()
        .to_string();
    let shown_start = text.find("error[E0301]: `dense` needs").unwrap();
    let shown = &text[shown_start..];
    let shown = &shown[..shown.find("```").unwrap()];
    assert_eq!(err.trim_end(), shown.trim_end());
}

#[test]
fn readme_tour_layers_exist() {
    // Every layer named in the README's layer table is a layer netc knows.
    let text = readme();
    let table = &text[text.find("| layer | arguments").unwrap()..];
    let table = &table[..table.find("\n\n").unwrap()];
    for row in table.lines().skip(2) {
        let first = row.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            let name = name.split('(').next().unwrap();
            assert!(
                netc::elab::is_builtin_layer(name),
                "README lists `{name}` but netc has no such layer"
            );
        }
    }
}

#[test]
fn readme_objective_example_checks() {
    let src = block_starting(&readme(), "model detector(");
    let spec =
        load_str("detector.net", &src, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let objective = netc::train::graph::objective_of(&spec.graph);
    assert_eq!(
        objective.to_string(),
        "cross_entropy(output=cls, label_smoothing=0) + 5 * mse(output=box)"
    );
    // It builds a training graph with a target input per term.
    let tg = netc::train::build(&spec.graph, 4, &objective).unwrap();
    assert_eq!(tg.target_inputs, ["targets:cls", "targets:box"]);
}
