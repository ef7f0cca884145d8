//! The `netc` binary end to end: commands, output formats and exit codes.

use std::process::{Command, Output};

mod cli_support;
use cli_support::{netc, stderr, stdout};

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

/// Every numeric flag is checked before anything runs: a usage error (exit 2) naming the
/// flag, the value and what is expected; nothing is silently clamped (`--batch 0` was 1).
#[test]
fn numeric_flags_are_checked() {
    let lenet = "specs/lenet5.net";
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["train", lenet, "--batch", "0"],
            "'--batch <BATCH>'",
            "from 1 to 2147483648",
        ),
        (
            &["train", lenet, "--epochs", "0"],
            "'--epochs <EPOCHS>'",
            "found 0",
        ),
        (
            &["train", lenet, "--lr", "nan"],
            "'nan' for '--lr <LR>'",
            "finite",
        ),
        (
            &["train", lenet, "--lr", "inf"],
            "'inf' for '--lr <LR>'",
            "finite",
        ),
        (
            &["train", lenet, "--lr=-1"],
            "'-1' for '--lr <LR>'",
            "must not be negative",
        ),
        (
            &["train", lenet, "--max-steps", "0"],
            "'--max-steps <MAX_STEPS>'",
            "at least 1",
        ),
        (&["train", lenet, "--seed=-3"], "'--seed <SEED>'", ""),
        (
            &["train", lenet, "--mean", "nan", "--std", "1"],
            "'--mean <MEAN>'",
            "finite",
        ),
        (
            &["train", lenet, "--mean", "0", "--std", "0"],
            "'--std <STD>'",
            "not be zero",
        ),
        (
            &["train", lenet, "--threads", "0"],
            "'0' for '--threads <THREADS>'",
            "at least 1",
        ),
        (
            &["bench", lenet, "--batch", "0"],
            "'--batch <BATCH>'",
            "found 0",
        ),
        (
            &["bench", lenet, "--iters", "0"],
            "'--iters <ITERS>'",
            "found 0",
        ),
        (
            &["graph", lenet, "--stage", "fused", "--batch", "0"],
            "'--batch <BATCH>'",
            "",
        ),
        (&["compile", lenet, "--batch", "0"], "'--batch <BATCH>'", ""),
        (
            &["run", lenet, "--input", "x.npy", "--threads", "0"],
            "'--threads <THREADS>'",
            "",
        ),
    ];
    for (args, flag, expected) in cases {
        let o = netc(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(flag) && e.contains(expected), "{args:?}: {e}");
    }
}

/// `--threads` is bounded on every command (4 × the cores, at most 256): the error names the
/// flag, the limit and the cores, instead of starting thousands of threads.
#[test]
fn threads_are_bounded() {
    let max = netc::runtime::pool::max_threads();
    let huge = "18446744073709551615";
    let too_many = (max + 1).to_string();
    for n in [huge, too_many.as_str()] {
        for cmd in [
            &[
                "run",
                "specs/lenet5.net",
                "--input",
                "x.npy",
                "--threads",
                n,
            ][..],
            &["bench", "specs/lenet5.net", "--threads", n],
            &["train", "specs/lenet5.net", "--threads", n],
        ] {
            let o = netc(cmd);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd:?}: {e}");
            assert!(e.contains("--threads"), "{e}");
            assert!(e.contains(&format!("limit of {max}")), "{e}");
            assert!(e.contains("cores available"), "{e}");
        }
    }
    // The library refuses too: compiling with too many threads is an error, not a panic.
    let spec = netc::load_file("specs/lenet5.net", &netc::Options::default()).unwrap();
    let w = netc::io::weights::Weights::init(&spec.graph, 0);
    let opts = netc::model::CompileOptions {
        batch: 1,
        threads: max + 1,
        memory_limit: None,
    };
    let e = netc::model::compile(&spec, &netc::model::params_f32(&w), opts)
        .err()
        .expect("too many threads is an error");
    assert!(e.contains(&format!("limit of {max}")), "{e}");
}

/// The same input given twice is a usage error naming it, not the last one silently winning.
#[test]
fn an_input_given_twice_is_an_error() {
    let x = "tests/data/reference/lenet5/input.npy";
    let named = format!("image={x}");
    for args in [
        [x, x],
        [named.as_str(), named.as_str()],
        [x, named.as_str()],
    ] {
        let o = netc(&[
            "run",
            "specs/lenet5.net",
            "--input",
            args[0],
            "--input",
            args[1],
        ]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains("input `image` twice"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile files: imports that cannot read secrets, bounded reads, escaped control characters

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("netc-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, f: &str) -> std::path::PathBuf {
        self.0.join(f)
    }
    fn write(&self, f: &str, text: &str) -> String {
        std::fs::write(self.join(f), text).unwrap();
        self.join(f).to_str().unwrap().to_string()
    }
    fn fifo(&self, f: &str) -> String {
        let p = self.join(f);
        assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
        p.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A secret in the environment of the guarded runs: no output may ever contain it.
const SECRET: &str = "hunter2-do-not-print-4c1d";

/// Runs netc with a secret in its environment and its standard input an open pipe nothing
/// writes to, under a 2 GB address-space limit (a regression that reads a device until memory
/// runs out fails at once instead of taking the machine's memory), killed after a generous
/// 120 s (a regression that blocks on a FIFO or on standard input fails instead of hanging the
/// suite; a correct run takes milliseconds). Returns the output and whether it was killed.
fn netc_guarded(args: &[&str]) -> (Output, bool) {
    use std::process::Stdio;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2097152; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NETC_TEST_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netc runs");
    let start = std::time::Instant::now();
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), killed)
}

/// A guarded run that must fail with exit status 1 and an error containing all of `words`,
/// without printing the secret or a raw escape character.
fn refused(args: &[&str], words: &[&str]) -> String {
    let (o, killed) = netc_guarded(args);
    let err = stderr(&o);
    assert!(!killed, "netc {args:?} blocked; it was killed: {err}");
    assert_eq!(o.status.code(), Some(1), "netc {args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "netc {args:?} should say `{w}`: {err}");
    }
    let all = format!("{}{err}", stdout(&o));
    assert!(
        !all.contains(SECRET),
        "netc {args:?} printed the secret: {all}"
    );
    assert!(
        !all.contains('\x1b'),
        "netc {args:?} printed a raw ESC: {all:?}"
    );
    err
}

const MODEL: &str = "model m {\n  input x: [1, 8, 8]\n  flatten\n  dense(2)\n}\n";

#[test]
fn imports_name_spec_files_only_and_never_echo_other_files() {
    let t = TempDir::new("imports");
    let spec = |name: &str, import: &str| t.write(name, &format!("import \"{import}\"\n{MODEL}"));
    // Files that are not specs, by name or by where a link leads: refused at the import,
    // unopened, whatever they hold.
    let environ = spec("environ.net", "/proc/self/environ");
    let err = refused(
        &["check", &environ],
        &[
            "`/proc/self/environ` is not a spec file: imports must name `.net`, `.yaml` or `.yml` files",
            "environ.net:1:1",
        ],
    );
    assert!(!err.contains("NETC_TEST_SECRET"), "{err}");
    std::os::unix::fs::symlink("/proc/self/environ", t.join("env.net")).unwrap();
    let linked = spec("linked.net", "env.net");
    refused(
        &["check", &linked],
        &["`env.net` is not a spec file", "link"],
    );
    let passwd = spec("passwd.net", "../../../../../../../etc/passwd");
    let err = refused(&["check", &passwd], &["is not a spec file"]);
    assert!(!err.contains("root:"), "{err}");
    // A spec file that is not spec text: reported by position, no byte of it echoed.
    t.write(
        "binary.net",
        &format!("model m {{ {SECRET}\u{0}{SECRET} }}"),
    );
    let binary = spec("uses_binary.net", "binary.net");
    refused(
        &["check", &binary],
        &[
            "cannot import `binary.net`: not spec text",
            "U+0000",
            "line 1, column 36",
        ],
    );
    // The root file on the command line may have any name, but only spec text is shown.
    refused(
        &["check", "/proc/self/environ"],
        &["not spec text", "U+0000"],
    );
    // The hint for a missing import names spec files only, never the directory's other files.
    t.write("secret_keys.txt", "x");
    t.write("blocks.net", "block b() { relu }\n");
    let missing = spec("missing.net", "secret_keys.net");
    let err = refused(&["check", &missing], &["cannot import `secret_keys.net`"]);
    assert!(!err.contains("secret_keys.txt"), "{err}");
    let typo = spec("typo.net", "block.net");
    refused(&["check", &typo], &["did you mean `blocks.net`?"]);
    // Spec files are still imported.
    let good = spec("good.net", "blocks.net");
    let (o, _) = netc_guarded(&["check", &good]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn every_input_file_is_a_bounded_regular_file() {
    let t = TempDir::new("bounded");
    // Specs: FIFOs, devices, standard input and oversized files, as the root or an import.
    let fifo = t.fifo("pipe.net");
    refused(&["check", &fifo], &["pipe.net", "FIFO", "regular files"]);
    let importer = t.write("imports_pipe.net", &format!("import \"pipe.net\"\n{MODEL}"));
    refused(&["check", &importer], &["cannot import `pipe.net`", "FIFO"]);
    refused(&["check", "/dev/zero"], &["/dev/zero", "character device"]);
    refused(&["check", "/dev/stdin"], &["/dev/stdin", "FIFO"]);
    std::fs::File::create(t.join("big.net"))
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    let importer = t.write("imports_big.net", &format!("import \"big.net\"\n{MODEL}"));
    refused(
        &["check", &importer],
        &["17 MiB", "16 MiB limit for spec files"],
    );

    // --input, --weights, --data, --resume.
    let run = |input: &str, weights: &str| {
        let (m, w) = (
            "specs/lenet5.net",
            "tests/data/reference/lenet5/weights.safetensors",
        );
        let w = if weights.is_empty() { w } else { weights };
        ["run", m, "--weights", w, "--input", input].map(str::to_string)
    };
    let refused_run = |input: &str, weights: &str, words: &[&str]| {
        let args = run(input, weights);
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), words)
    };
    let img_fifo = t.fifo("in.png");
    for input in ["/dev/zero", "/dev/stdin", img_fifo.as_str()] {
        refused_run(input, "", &["regular files"]);
    }
    let npy_fifo = t.fifo("in.npy");
    refused_run(&npy_fifo, "", &["in.npy", "FIFO"]);
    refused_run(t.0.to_str().unwrap(), "", &["is a directory"]);
    std::fs::File::create(t.join("big.png"))
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    refused_run(
        t.join("big.png").to_str().unwrap(),
        "",
        &["65 MiB", "64 MiB limit for image files"],
    );
    let input = "tests/data/reference/lenet5/input.npy";
    refused_run(input, "/dev/zero", &["/dev/zero", "character device"]);
    let m = t.write("m.net", MODEL);
    refused(
        &["train", &m, "--data", "/dev/zero", "--epochs", "1"],
        &["character device"],
    );
    refused(
        &[
            "train",
            "specs/lenet5.net",
            "--data",
            "bundled",
            "--resume",
            "/dev/zero",
        ],
        &["character device"],
    );
}

#[test]
fn control_characters_are_escaped_in_every_error() {
    let t = TempDir::new("controls");
    // In a spec given as text (`--set`): the snippet shows control pictures.
    let m = t.write(
        "m.net",
        "model m(n: int = 2) {\n  input x: [1, 8, 8]\n  flatten\n  dense(n)\n}\n",
    );
    let err = refused(&["check", &m, "--set", "n=2\x1b[2J\x07"], &["␛[2J␇"]);
    assert!(!err.contains('\x07'), "{err:?}");
    // A spec file holding control characters is not spec text.
    let bad = t.write("bell.net", "model m {\x1b]0;pwned\x07\n}\n");
    refused(
        &["check", &bad],
        &["not spec text", "U+001B", "line 1, column 10"],
    );
    // Paths and names from the command line, in spec, I/O and data errors.
    refused(&["check", "no\x1b[31mpe.net"], &["no\\u{1b}[31mpe.net"]);
    let w = "tests/data/reference/lenet5/weights.safetensors";
    let lenet = "specs/lenet5.net";
    refused(
        &["run", lenet, "--weights", w, "--input", "in\x1b[31m.png"],
        &["in\\u{1b}[31m.png"],
    );
    refused(
        &["train", &m, "--data", "da\x1b[31mta"],
        &["da\\u{1b}[31mta"],
    );
    refused(
        &["check", &m, "--model", "m\x1b[5m"],
        &["no model `m\\u{1b}[5m`"],
    );
    // Usage errors quote the command line: even with colors forced on (as on a terminal),
    // the argument's escape sequences are not passed through.
    let o = Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(["run", &m, "--threads", "\x1b[31mX\x07"])
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("invalid value"), "{err}");
    assert!(!err.contains(['\x1b', '\x07']), "{err:?}");
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
    // A batch past the spec's limit is a usage error; the largest batch allowed, on a model
    // whose sizes then overflow 64 bits, is refused for memory, and `graph`, which allocates
    // nothing big, refuses it too (its size arithmetic overflowed: a panic).
    let o = netc(&[
        "bench",
        "specs/lenet5.net",
        "--batch",
        "18446744073709551615",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let wide = mutated_lenet5(
        "wide_input",
        "input image: [1, size, size]",
        "input image: [1000000, size, size]",
    );
    let wide = wide.to_str().unwrap();
    let huge = ["--batch", "2147483648"];
    let bench = netc(&[&["bench", wide][..], &huge].concat());
    assert_refused(&bench, &["more than 4 EiB"]);
    for train in [&[][..], &["--train"]] {
        let graph = ["graph", wide, "--stage", "fused"];
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
    let o = netc(&["bench", wide, "--memory-limit", "16G"]);
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
