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

#[test]
fn run_prints_top5_and_writes_npy() {
    let out = std::env::temp_dir().join(format!("netc-cli-run-{}.npy", std::process::id()));
    let o = netc(&[
        "run",
        "specs/lenet5.net",
        "--weights",
        "tests/data/reference/lenet5/weights.safetensors",
        "--input",
        "tests/data/reference/lenet5/input.npy",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert_eq!(s.matches("top-5:").count(), 4, "{s}");
    let got = netc::io::npy::read_f32(&out).unwrap();
    let want = netc::io::npy::read_f32("tests/data/reference/lenet5/eval_output.npy").unwrap();
    let err: f32 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 1e-4, "{err}");
    let _ = std::fs::remove_file(&out);

    // Weights of another model: a clear error, exit 1.
    let o = netc(&[
        "run",
        "specs/lenet5.net",
        "--weights",
        "tests/data/reference/mini_resnet/weights.safetensors",
        "--input",
        "tests/data/reference/lenet5/input.npy",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("mini_resnet/weights.safetensors"),
        "{}",
        stderr(&o)
    );

    // An input of the wrong shape.
    let o = netc(&[
        "run",
        "specs/mini_resnet.net",
        "--input",
        "tests/data/reference/lenet5/input.npy",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not fit input `image`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn graph_stages_and_compile() {
    let o = netc(&[
        "graph",
        "specs/mini_resnet.net",
        "--stage",
        "fused",
        "--batch",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    // conv + folded batchnorm + residual add + relu in one kernel
    assert!(s.contains("contraction conv2d+add+add+relu"), "{s}");
    let o = netc(&["graph", "specs/lenet5.net", "--stage", "prims"]);
    assert!(
        stdout(&o).contains("conv2d(s=[1, 1], p=[2, 2, 2, 2]"),
        "{}",
        stdout(&o)
    );
    let o = netc(&["compile", "specs/lenet5.net", "--emit", "clif"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("function") && s.contains("total:"), "{s}");
    // The training step: the forward kernels, the loss and the gradients' kernels.
    let o = netc(&["compile", "specs/lenet5.net", "--train", "--batch", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    for want in [
        "conv2d+add+relu (conv1)",
        "(loss)",
        "conv2d_grad_weight (conv1')",
        "conv2d_grad_input",
        "total:",
    ] {
        assert!(s.contains(want), "{want}: {s}");
    }
    let kernels = |s: &str| s.lines().filter(|l| l.starts_with('k')).count();
    let inference = netc(&["compile", "specs/lenet5.net", "--batch", "4"]);
    assert!(kernels(&s) > 3 * kernels(&stdout(&inference)), "{s}");
}

#[test]
fn bench_reports_json() {
    let o = netc(&[
        "bench",
        "specs/lenet5.net",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["arena_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["kernels"], 7);
}

/// `--profile-json FILE` writes the report with one row per kernel, bytes moved included,
/// for inference and for training, with each kernel's GFLOP/s as a share of the matrix
/// product's measured in the same run; the text table gains GB/s and %peak columns.
#[test]
fn bench_writes_the_profile_as_json() {
    let dir = std::env::temp_dir().join(format!("netc-profile-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (mode, extra) in [("inference", &[][..]), ("train", &["--train"][..])] {
        let file = dir.join(format!("{mode}.json"));
        let mut args = vec![
            "bench",
            "specs/lenet5.net",
            "--batch",
            "4",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--profile-json",
            file.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = netc(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        for want in ["GB/s", "%peak", "GEMM peak now"] {
            assert!(stdout(&o).contains(want), "{mode}: {}", stdout(&o));
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let rows = v["profile"]["kernels"].as_array().unwrap();
        assert!(!rows.is_empty(), "{mode}");
        let peak = v["profile"]["gemm_peak_gflops_per_s"].as_f64().unwrap();
        assert!(peak.is_finite() && peak > 0.1, "{mode}: peak {peak}");
        for r in rows {
            let (g, f) = (
                r["gflops_per_s"].as_f64().unwrap(),
                r["peak_fraction"].as_f64().unwrap(),
            );
            assert!((f * peak - g).abs() <= 1e-9 * g.max(1.0), "{mode}: {r}");
            // At least the output is written: 4 bytes per element of its shape.
            let out: u64 = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product();
            assert!(r["bytes"].as_u64().unwrap() >= 4 * out, "{mode}: {r}");
            assert!(r["gb_per_s"].as_f64().unwrap() >= 0.0, "{mode}: {r}");
            assert!(r["ms"].as_f64().unwrap() >= 0.0, "{mode}: {r}");
        }
    }
    // The first conv of LeNet-5 reads the 4x1x28x28 batch and the 6x1x5x5 weight (its bias
    // is folded in as a 6-float constant) and writes 4x6x28x28.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inference.json")).unwrap())
            .unwrap();
    let conv1 = v["profile"]["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["origin"] == "conv1")
        .unwrap()
        .clone();
    let want = 4 * (4 * 28 * 28 + 6 * 25 + 4 * 6 * 28 * 28);
    let got = conv1["bytes"].as_u64().unwrap();
    assert!(
        got == want || got == want + 4 * 6,
        "conv1 bytes {got}, want {want} (+ bias)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Convolutions that run in Winograd form say so in the profile (text and JSON, inference and
/// training), since their GFLOP/s count the direct multiply-adds.
#[test]
fn bench_profile_names_winograd_convolutions() {
    let dir = std::env::temp_dir().join(format!("netc-profile-wino-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("w.net");
    std::fs::write(
        &spec,
        "model w {\n  input x: [16, 24, 24]\n  conv(16, 3, pad=1)\n  relu\n  \
         conv(16, 5, pad=2)\n  global_avgpool\n  flatten\n  dense(3)\n}\n",
    )
    .unwrap();
    let file = dir.join("p.json");
    let o = netc(&[
        "bench",
        spec.to_str().unwrap(),
        "--batch",
        "2",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--profile-json",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let rows = v["profile"]["kernels"].as_array().unwrap();
    let algo = |origin: &str| {
        let r = rows.iter().find(|r| r["origin"] == origin).unwrap();
        r["algorithm"].as_str().unwrap().to_string()
    };
    // The 3x3 runs in Winograd form (72 tiles of 4x4); the 5x5 cannot.
    assert_eq!(algo("0"), "winograd", "{rows:?}");
    assert_eq!(algo("2"), "", "{rows:?}");
    assert!(stdout(&o).contains("(winograd)"), "{}", stdout(&o));
    let o = netc(&[
        "bench",
        spec.to_str().unwrap(),
        "--train",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--profile",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "conv forward (winograd)",
        "conv backward weight (winograd)",
        "conv forward (gemm)",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graph_shows_the_training_graph() {
    let o = netc(&[
        "graph",
        "specs/lenet5.net",
        "--stage",
        "fused",
        "--train",
        "--batch",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("conv2d_grad_weight"), "{text}");
    assert!(text.contains("output grad:conv1.weight"), "{text}");
    assert!(text.contains("output loss"), "{text}");
}

/// LeNet-5 with `from` replaced by `to`, in a scratch file (a spec that passes `check`).
fn mutated_lenet5(name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string("specs/lenet5.net").unwrap();
    assert!(text.contains(from), "{from}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch/cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.net"));
    std::fs::write(&path, text.replace(from, to)).unwrap();
    let ok = netc(&["check", path.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    path
}

/// Asserts a refusal for memory: exit 1 (not SIGABRT's 134), the total, the budget, the
/// largest items (`names` among them) and the fix.
fn assert_refused(o: &Output, names: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.starts_with("error: this model needs "), "{e}");
    assert!(e.contains("of memory, more than the memory"), "{e}");
    assert!(e.contains("largest:"), "{e}");
    for n in names {
        assert!(e.contains(n), "{n} not in: {e}");
    }
    assert!(
        e.contains("`--batch`") && e.contains("`--memory-limit SIZE`"),
        "{e}"
    );
}

#[test]
fn models_too_large_for_memory_are_refused_before_allocating() {
    // The issue's cases: each passes `check`, then aborted with "memory allocation of N bytes
    // failed" (exit 134). Each needs terabytes, or more than the limit given.
    let input = "tests/data/reference/lenet5/input.npy";
    let classes = ["--set", "classes=2147483647"];
    let fc3 = "fc3.weight [2147483647, 84] (the weights)";
    assert_refused(
        &netc(&[&["bench", "specs/lenet5.net"][..], &classes].concat()),
        &[fc3],
    );
    assert_refused(
        &netc(&[&["run", "specs/lenet5.net", "--input", input][..], &classes].concat()),
        &[fc3],
    );
    assert_refused(
        &netc(&[&["compile", "specs/lenet5.net"][..], &classes].concat()),
        &[fc3],
    );
    let big_batch = "input `image` [100000000, 1, 28, 28]";
    for cmd in [
        &["bench", "specs/lenet5.net", "--batch", "100000000"][..],
        &[
            "bench",
            "specs/lenet5.net",
            "--batch",
            "100000000",
            "--train",
        ],
        &["compile", "specs/lenet5.net", "--batch", "100000000"],
        &[
            "compile",
            "specs/lenet5.net",
            "--batch",
            "100000000",
            "--train",
        ],
    ] {
        assert_refused(&netc(cmd), &[big_batch]);
    }
    // A batch whose sizes overflow 64 bits; `graph`, which allocates nothing big, refuses it
    // too (its size arithmetic overflowed: a panic).
    let huge = ["--batch", "18446744073709551615"];
    let bench = netc(&[&["bench", "specs/lenet5.net"][..], &huge].concat());
    assert_refused(&bench, &["more than 4 EiB"]);
    for train in [&[][..], &["--train"]] {
        let graph = ["graph", "specs/lenet5.net", "--stage", "fused"];
        let o = netc(&[&graph[..], &huge, train].concat());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("more than any size netc computes with"));
    }
    // dense(1000000): its inference needs about 5.4 GiB (weights, their copy, the folded
    // constants), refused under a 4 GiB limit.
    let dense = mutated_lenet5("dense_1m", "fc1: dense(120)", "fc1: dense(1000000)");
    let o = netc(&["bench", dense.to_str().unwrap(), "--memory-limit", "4G"]);
    assert_refused(
        &o,
        &["fc1.weight [1000000, 400] (the weights)", "limit, 4.0 GiB"],
    );
    // An input of [1000000, 28, 28].
    let wide = mutated_lenet5(
        "wide_input",
        "input image: [1, size, size]",
        "input image: [1000000, size, size]",
    );
    let o = netc(&["bench", wide.to_str().unwrap(), "--memory-limit", "16G"]);
    assert_refused(&o, &["[1, 1000000, 28, 28]"]);
}

#[test]
fn memory_limit_flag_sets_the_budget() {
    // LeNet-5 at batch 1 fits in a few hundred KiB beside the process itself, and by default.
    let ok = netc(&["bench", "specs/lenet5.net", "--iters", "1", "--warmup", "0"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let ok = netc(&[
        "bench",
        "specs/lenet5.net",
        "--iters",
        "1",
        "--memory-limit",
        "64M",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let s = stdout(&ok);
    assert!(s.contains(", estimate ") && s.contains("peak RSS"), "{s}");
    // A limit below what it needs refuses it, naming the limit.
    let input = "tests/data/reference/lenet5/input.npy";
    for cmd in [
        &["bench", "specs/lenet5.net", "--memory-limit", "100K"][..],
        &[
            "run",
            "specs/lenet5.net",
            "--input",
            input,
            "--memory-limit",
            "100k",
        ],
        &["compile", "specs/lenet5.net", "--memory-limit", "100KiB"],
        &[
            "compile",
            "specs/lenet5.net",
            "--train",
            "--memory-limit",
            "0.09765625M",
        ],
        &[
            "bench",
            "specs/lenet5.net",
            "--train",
            "--memory-limit",
            "100K",
        ],
    ] {
        assert_refused(
            &netc(cmd),
            &["the memory limit, 100.0 KiB", "fc1.weight [120, 400]"],
        );
    }
    // Values that are no size are usage errors naming the flag.
    for bad in ["0", "0G", "lots", "-1G", "8X", "1.5.2G", "99999999999T"] {
        let o = netc(&[
            "bench",
            "specs/lenet5.net",
            &format!("--memory-limit={bad}"),
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--memory-limit <SIZE>"),
            "{}",
            stderr(&o)
        );
    }
}
