//! The `netc` binary end to end: commands, output formats and exit codes.

use std::process::{Command, Output};

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_ok_and_error_exit_codes() {
    let ok = netc(&["check", "specs/lenet5.net", "specs/resnet18.net"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("ok: specs/lenet5.net (model lenet5, 61,706 parameters"));

    let bad = netc(&["check", "specs/lenet5.net", "tests/data/diag/cycle_a.net"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("ok: specs/lenet5.net"));
    assert!(stderr(&bad).contains("error[E0102]: import cycle"));

    let missing = netc(&["check", "nope.net"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("cannot read nope.net: no such file"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(netc(&["bogus"]).status.code(), Some(2));
    assert_eq!(netc(&["check"]).status.code(), Some(2));
    assert_eq!(
        netc(&["summary", "specs/lenet5.net", "--format", "x"])
            .status
            .code(),
        Some(2)
    );
    let o = netc(&["summary", "specs/lenet5.net", "--set", "classes"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected name=value"));
}

#[test]
fn summary_table_and_overrides() {
    let o = netc(&["summary", "specs/lenet5.net"]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(s.contains("conv1  conv2d(6, k=5, p=2)"), "{s}");
    assert!(s.contains("parameters: 61,706 (61,706 trainable)"), "{s}");
    assert!(s.contains("train:"), "{s}");

    let o = netc(&["summary", "specs/lenet5.net", "--set", "classes=100"]);
    let s = stdout(&o);
    assert!(s.contains("fc3    dense(100)"), "{s}");
    assert!(s.contains("model lenet5(classes=100, size=28)"), "{s}");

    let o = netc(&["summary", "specs/lenet5.net", "--set", "clases=100"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("help: did you mean `classes`?"));
}

#[test]
fn summary_json_totals() {
    let o = netc(&[
        "summary",
        "specs/resnet18.net",
        "--json",
        "--set",
        "size=32",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["parameters"], 11_689_512);
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1000]));
    let layer_sum: u64 = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["params"].as_u64().unwrap())
        .sum();
    assert_eq!(layer_sum, 11_689_512);
    // ResNet-18 at 224x224 is 1.82 GMACs; at 32x32 it is (32/224)^2 of that, roughly.
    let flops = v["flops"].as_u64().unwrap();
    assert!((60_000_000..90_000_000).contains(&flops), "{flops}");
}

#[test]
fn graph_formats() {
    let text = stdout(&netc(&["graph", "specs/resnet18.net"]));
    assert!(
        text.contains("layer1.0.conv1 conv2d(64, k=3, p=1, nobias)"),
        "{text}"
    );

    let dot = netc(&["graph", "specs/resnet18.net", "--format", "dot"]);
    assert_eq!(dot.status.code(), Some(0));
    let dot = stdout(&dot);
    assert!(dot.starts_with("digraph \"resnet18\" {"));
    assert!(
        dot.contains("subgraph cluster_0 { label=\"layer1.0 : basic\""),
        "{dot}"
    );
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());

    let json = netc(&["graph", "specs/resnet18.net", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["params"].as_array().unwrap().len(), 122);
    assert_eq!(v["nodes"][1]["path"], "conv1");
}

#[test]
fn full_resnet50_flops_match_published_figure() {
    // torchvision lists ResNet-50 at 4.09 GFLOPS (multiply-adds); we count a multiply-add as 2.
    let o = netc(&["summary", "specs/resnet50.net", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gmacs = v["flops"].as_u64().unwrap() as f64 / 2e9;
    assert!((4.0..4.2).contains(&gmacs), "{gmacs}");
}
