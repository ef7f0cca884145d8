//! `netc graph --format text|dot|json` at every stage (`layers`/`elab`, `prims`/`lowered`,
//! `fused`), inference and training: each format is produced, and says the same as the text.

use std::collections::HashSet;

mod cli_support;
use cli_support::netc;

fn graph(stage: &str, format: &str, extra: &[&str]) -> String {
    let o = netc(
        &[
            &[
                "graph",
                "specs/lenet5.net",
                "--stage",
                stage,
                "--format",
                format,
            ][..],
            extra,
        ]
        .concat(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stage} {format}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Checks a dot graph's shape: one digraph, every edge between declared nodes.
fn check_dot(dot: &str) -> (usize, usize) {
    assert!(dot.starts_with("digraph "), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    let mut nodes = HashSet::new();
    let mut edges = Vec::new();
    for line in dot.lines().map(str::trim) {
        if let Some((a, b)) = line.strip_suffix(';').and_then(|l| l.split_once(" -> ")) {
            edges.push((a.to_string(), b.to_string()));
        } else if let Some((id, _)) = line.split_once(" [label=").or(line.split_once(" [shape="))
            && id != "node"
        {
            nodes.insert(id.to_string());
        }
    }
    for (a, b) in &edges {
        assert!(nodes.contains(a) && nodes.contains(b), "edge {a} -> {b}");
    }
    (nodes.len(), edges.len())
}

#[test]
fn every_stage_has_every_format() {
    for (stage, alias) in [("layers", "elab"), ("prims", "lowered"), ("fused", "fused")] {
        let text = graph(stage, "text", &[]);
        assert_eq!(text, graph(alias, "text", &[]), "{alias} is {stage}");
        let json: serde_json::Value = serde_json::from_str(&graph(stage, "json", &[])).unwrap();
        let (nodes, edges) = check_dot(&graph(stage, "dot", &[]));
        assert!(edges > 0, "{stage}: no edges");
        match stage {
            "prims" => {
                let n = json["nodes"].as_array().unwrap().len();
                assert_eq!(n, text.lines().filter(|l| l.starts_with('%')).count());
                assert_eq!(nodes, n + 1, "nodes and the output");
                assert_eq!(json["outputs"][0]["name"], "output");
            }
            "fused" => {
                let k = json["kernels"].as_array().unwrap();
                let lines = text.lines().filter(|l| l.starts_with('k')).count();
                assert_eq!(k.len(), lines);
                assert_eq!(nodes, lines + 2, "kernels, the input and the output");
                // Every kernel's first op as the text lists it.
                assert_eq!(k[0]["ops"][0], "conv2d");
                assert!(text.contains("k0 contraction conv2d"), "{text}");
            }
            _ => assert_eq!(json["nodes"].as_array().unwrap().len(), 13),
        }
    }
    // The training graph too.
    let json: serde_json::Value =
        serde_json::from_str(&graph("fused", "json", &["--train", "--batch", "4"])).unwrap();
    assert!(
        json["outputs"].as_array().unwrap().len() > 1,
        "loss and gradients"
    );
    check_dot(&graph("prims", "dot", &["--train"]));
    // --train at the layer stage would be ignored: refused.
    let o = netc(&["graph", "specs/lenet5.net", "--train"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--stage prims"));
}
