//! `netc train` end to end on the bundled data: metrics, checkpoints, exact resume, NaN stop,
//! Ctrl-C, freezing, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use netc::io::weights::Weights;
use netc::{Options, load_file};

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("netc runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON line netc prints last on stdout.
fn metrics(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A fresh directory under target/.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn lenet() -> netc::Spec {
    load_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/lenet5.net"),
        &Options::default(),
    )
    .unwrap()
}

#[test]
fn trains_reports_and_writes_checkpoint_and_curves() {
    let d = scratch("basic");
    let mj = d.join("m.json");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--epochs",
        "1",
        "--batch",
        "128",
        "--out",
        s(&d),
        "--metrics-json",
        s(&mj),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = metrics(&o);
    assert_eq!(m["outcome"], "finished");
    assert_eq!(m["steps"], 78); // 10,000 / 128, the last partial batch dropped
    // One epoch of LeNet-5 on 10,000 Fashion-MNIST images is far above chance (10%).
    let acc = m["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "test accuracy {acc}");
    assert!(stderr(&o).contains("epoch   1  loss"), "{}", stderr(&o));
    // The same line in the file, the checkpoint loads as plain weights, the curves exist.
    let file: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&mj).unwrap().trim()).unwrap();
    assert_eq!(file, m);
    Weights::load(d.join("checkpoint.safetensors"), &lenet().graph).unwrap();
    let png = std::fs::read(d.join("curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn resume_continues_exactly() {
    let d = scratch("resume");
    let common = [
        "train",
        "specs/lenet5.net",
        "--epochs",
        "1",
        "--batch",
        "256",
        "--threads",
        "1",
        "--seed",
        "3",
        "-q",
    ];
    let straight = d.join("straight.safetensors");
    let o = netc(&[&common[..], &["--save", s(&straight)]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let split = d.join("split.safetensors");
    let o = netc(&[&common[..], &["--save", s(&split), "--max-steps", "17"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(metrics(&o)["outcome"], "stopped");
    assert_eq!(metrics(&o)["steps"], 17);
    let o = netc(&[&common[..], &["--resume", s(&split)]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(metrics(&o)["outcome"], "finished");
    assert_eq!(metrics(&o)["steps"], 39);

    let g = lenet().graph;
    let a = Weights::load(&straight, &g).unwrap();
    let b = Weights::load(&split, &g).unwrap();
    assert_eq!(
        a, b,
        "resumed training differs from training straight through"
    );
}

#[test]
fn a_nan_loss_stops_and_keeps_the_last_checkpoint() {
    let d = scratch("nan");
    let ck = d.join("ck.safetensors");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--epochs",
        "1",
        "--batch",
        "256",
        "--save",
        s(&ck),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = std::fs::read(&ck).unwrap();
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--epochs",
        "2",
        "--batch",
        "256",
        "--resume",
        s(&ck),
        "--lr",
        "1e9",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("the loss became"), "{err}");
    assert!(err.contains("at step"), "{err}");
    assert!(err.contains("unchanged"), "{err}");
    assert_eq!(metrics(&o)["outcome"], "non_finite");
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "the checkpoint was touched"
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let d = scratch("sigint");
    let ck = d.join("ck.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netc"))
        .args([
            "train",
            "specs/lenet5.net",
            "--epochs",
            "50",
            "--save",
            s(&ck),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has started (its first line), then interrupt.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(first.starts_with("training lenet5"), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    let o = Output {
        stderr: rest.into_bytes(),
        ..o
    };
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert_eq!(metrics(&o)["outcome"], "stopped");
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let ckpt = netc::train::checkpoint::load(&ck, &lenet().graph).unwrap();
    assert!(ckpt.progress.is_some());
}

#[test]
fn frozen_layers_do_not_change() {
    let d = scratch("freeze");
    let ck = d.join("ck.safetensors");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--epochs",
        "1",
        "--max-steps",
        "5",
        "--seed",
        "7",
        "--freeze",
        "conv1",
        "conv2",
        "--save",
        s(&ck),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let g = lenet().graph;
    let init = Weights::init(&g, 7);
    let after = Weights::load(&ck, &g).unwrap();
    for (i, p) in g.params.iter().enumerate() {
        let same = init.values[i] == after.values[i];
        assert_eq!(
            same,
            p.path.starts_with("conv"),
            "{}: frozen layers keep their values, the others train",
            p.path
        );
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let o = netc(&["train", "specs/lenet5.net", "--data", "/no/such/dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/no/such/dir"), "{}", stderr(&o));
    let o = netc(&["train", "specs/lenet5.net", "--freeze", "conv9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("conv9"), "{}", stderr(&o));
    // A model whose input does not fit the data.
    let o = netc(&["train", "specs/mini_resnet.net", "--max-steps", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("1×28×28"), "{}", stderr(&o));
    let o = netc(&["train", "specs/lenet5.net", "--resume", "specs/lenet5.net"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn normalization_flags_parse_and_are_checked() {
    let d = scratch("norm");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--mean",
        "0.3",
        "--std",
        "0.35",
        "--max-steps",
        "2",
        "--out",
        s(&d),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Three channels for a one-channel input.
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--mean",
        "0.3,0.3,0.3",
        "--std",
        "0.3,0.3,0.3",
        "--max-steps",
        "2",
        "--out",
        s(&d),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = netc(&["train", "specs/lenet5.net", "--mean", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// On a terminal (a pseudo-terminal made by util-linux `script`), progress is a bar redrawn in
/// place with loss, accuracy, speed and ETA; without one (every other test), plain lines.
#[test]
fn a_terminal_gets_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to make a pseudo-terminal");
        return;
    }
    let d = scratch("tty");
    let cmd = format!(
        "{} train specs/lenet5.net --epochs 1 --max-steps 30 --out {}",
        env!("CARGO_BIN_EXE_netc"),
        s(&d)
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\x1b[2Kepoch 1/1 ["), "{text}");
    for part in ["loss ", "acc ", "img/s", "ETA "] {
        assert!(text.contains(part), "no `{part}` in {text}");
    }
}

/// A refusal for memory: exit 1 (not SIGABRT's 134) with the total, the budget, the largest
/// items (`names` among them) and the fix; nothing written to `out`.
fn assert_refused(o: &Output, out: &Path, names: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.starts_with("error: this model needs "), "{e}");
    assert!(
        e.contains("largest:") && e.contains("`--memory-limit SIZE`"),
        "{e}"
    );
    for n in names {
        assert!(e.contains(n), "{n} not in: {e}");
    }
    assert_eq!(
        std::fs::read_dir(out).unwrap().count(),
        0,
        "{out:?} written"
    );
}

#[test]
fn training_too_large_for_memory_is_refused_before_allocating() {
    let out = scratch("too_large");
    let o = out.to_str().unwrap();
    // The cases (each aborted with SIGABRT): 2^31 classes, a batch of 10^8.
    let r = netc(&[
        "train",
        "specs/lenet5.net",
        "--set",
        "classes=2147483647",
        "--out",
        o,
    ]);
    assert_refused(&r, &out, &["fc3.weight [2147483647, 84] (the weights)"]);
    let r = netc(&[
        "train",
        "specs/lenet5.net",
        "--batch",
        "100000000",
        "--out",
        o,
    ]);
    assert_refused(&r, &out, &["input `image` [100000000, 1, 28, 28]"]);
    // dense(1000000): weights, their copies, the optimizer state and evaluation's model come
    // to about 17 GiB, more than an 8 GiB limit.
    let text = std::fs::read_to_string("specs/lenet5.net").unwrap();
    let dense = out.parent().unwrap().join("lenet5_dense_1m.net");
    std::fs::write(&dense, text.replace("dense(120)", "dense(1000000)")).unwrap();
    let spec = dense.to_str().unwrap();
    let r = netc(&["train", spec, "--memory-limit", "8G", "--out", o]);
    assert_refused(
        &r,
        &out,
        &[
            "fc1.weight [1000000, 400] (optimizer state)",
            "limit, 8.0 GiB",
        ],
    );
    // A model that fits by default, refused by a lower limit.
    let r = netc(&[
        "train",
        "specs/lenet5.net",
        "--memory-limit",
        "1M",
        "--out",
        o,
    ]);
    assert_refused(&r, &out, &["the memory limit, 1.0 MiB"]);
}
