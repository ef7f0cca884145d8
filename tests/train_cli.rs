//! `netc train` end to end on the bundled data: metrics, checkpoints, exact resume, NaN stop,
//! Ctrl-C, freezing, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use netc::io::weights::Weights;
use netc::{Options, load_file};

mod cli_support;
use cli_support::{metrics, netc, s, scratch, stderr};

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

/// One NaN in `conv1.bias` (its channel goes through a ReLU and a max pooling, which used to
/// turn NaN into 0): the loss is NaN at the first step, the error names the parameter, and no
/// checkpoint is written.
#[test]
fn a_nan_weight_behind_a_relu_stops_training_and_is_named() {
    let d = scratch("nan_weight");
    let g = lenet().graph;
    let mut w = Weights::init(&g, 7);
    let i = g
        .params
        .iter()
        .position(|p| p.path == "conv1.bias")
        .unwrap();
    let netc::io::weights::Value::F32(b) = &mut w.values[i] else {
        panic!("conv1.bias is f32")
    };
    b[[0]] = f32::NAN;
    let wp = d.join("w.safetensors");
    w.save(&wp, &g).unwrap();
    let ck = d.join("ck.safetensors");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--weights",
        s(&wp),
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--save",
        s(&ck),
        "-q",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the loss became NaN at step 1"), "{err}");
    assert!(err.contains("`conv1.bias`"), "{err}");
    assert!(err.contains("no checkpoint was written"), "{err}");
    assert_eq!(metrics(&o)["outcome"], "non_finite");
    assert!(!ck.exists(), "a checkpoint was written");
}

/// A finite loss whose update overflows every weight (a learning rate beyond f32): training
/// stops at that step naming the parameters, and the checkpoint `--max-steps` would have
/// written after it never appears.
#[test]
fn an_update_to_infinity_stops_before_the_checkpoint() {
    let d = scratch("inf_update");
    let ck = d.join("ck.safetensors");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--lr",
        "1e60",
        "--save",
        s(&ck),
        "-q",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the update made `conv1.weight`"), "{err}");
    assert!(err.contains("NaN or infinite at step 1"), "{err}");
    assert_eq!(metrics(&o)["outcome"], "non_finite");
    assert!(!ck.exists(), "a checkpoint was written");
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

// ---- checkpoints and training state on a tiny data set (5 batches of 32 per epoch) ----

/// 160 training and 40 test images of 28×28 bytes in `dir` (IDX files), each class a
/// different bright band over noise, so that training has something to learn.
fn tiny_data(dir: &Path) -> PathBuf {
    let data = dir.join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    let images = |n: usize, salt: usize| -> (Vec<u8>, Vec<u8>) {
        let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + salt) % 10) as u8).collect();
        let mut px = Vec::with_capacity(n * 784);
        for (i, &l) in labels.iter().enumerate() {
            for p in 0..784 {
                let noise = ((i * 131 + p * 17 + salt) * 2654435761) % 97;
                let band = if (p / 28) / 3 == l as usize { 150 } else { 0 };
                px.push((noise + band) as u8);
            }
        }
        (px, labels)
    };
    for (split, n, salt) in [("train", 160, 0), ("t10k", 40, 5)] {
        let (px, labels) = images(n, salt);
        let enc = netc::data::idx::encode;
        let write = |name: String, bytes: Vec<u8>| std::fs::write(data.join(name), bytes).unwrap();
        write(
            format!("{split}-images-idx3-ubyte"),
            enc(&[n as u32, 28, 28], &px),
        );
        write(
            format!("{split}-labels-idx1-ubyte"),
            enc(&[n as u32], &labels),
        );
    }
    data
}

/// `netc train specs/lenet5.net` on `data`, batch 32, one thread, seed 5, quiet, plus `more`.
fn train_tiny(data: &Path, more: &[&str]) -> Output {
    let base = [
        "train",
        "specs/lenet5.net",
        "--data",
        s(data),
        "--batch",
        "32",
        "--threads",
        "1",
        "--seed",
        "5",
        "-q",
    ];
    netc(&[&base[..], more].concat())
}

fn progress(path: &Path) -> netc::train::checkpoint::Progress {
    netc::train::checkpoint::load(path, &lenet().graph)
        .unwrap()
        .progress
        .unwrap()
}

/// Stopping mid-epoch and resuming gives that epoch the figures of a run straight through
/// (the running sums are in the checkpoint), in the history and in the final JSON.
#[test]
fn a_resumed_epoch_reports_the_straight_runs_figures() {
    let d = scratch("resume_metrics");
    let data = tiny_data(&d);
    let (straight, split) = (d.join("straight.safetensors"), d.join("split.safetensors"));
    let o = train_tiny(&data, &["--epochs", "2", "--save", s(&straight)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = metrics(&o);
    // Stop at step 7: epoch 1 finished, epoch 2 stopped after its batch 2 of 5.
    let o = train_tiny(
        &data,
        &["--epochs", "2", "--save", s(&split), "--max-steps", "7"],
    );
    assert_eq!(metrics(&o)["outcome"], "stopped", "{}", stderr(&o));
    let p = progress(&split);
    assert_eq!((p.epoch, p.batch, p.step), (1, 2, 7));
    let o = train_tiny(&data, &["--epochs", "2", "--resume", s(&split)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = metrics(&o);
    for k in [
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "steps",
    ] {
        assert_eq!(got[k], want[k], "{k}: resumed {got} straight {want}");
    }
    assert_eq!(progress(&split).history, progress(&straight).history);
}

/// Identical training writes identical checkpoint files (the metadata in a fixed order, no
/// wall-clock times in it), with a finished epoch and running sums of an unfinished one.
#[test]
fn identical_training_writes_identical_checkpoints() {
    let d = scratch("reproducible");
    let data = tiny_data(&d);
    let files: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            let ck = d.join(format!("ck{i}.safetensors"));
            let o = train_tiny(
                &data,
                &["--epochs", "2", "--max-steps", "7", "--save", s(&ck)],
            );
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            std::fs::read(&ck).unwrap()
        })
        .collect();
    assert!(files[0] == files[1], "the two checkpoints differ");
}

/// Saving the same weights and metadata gives the same bytes every time (safetensors writes
/// its metadata map in a HashMap's order, different for every map).
#[test]
fn saved_metadata_is_in_a_fixed_order() {
    let d = scratch("meta_order");
    let g = lenet().graph;
    let w = Weights::init(&g, 1);
    let meta: std::collections::HashMap<String, String> = (0..6)
        .map(|i| (format!("key{i}"), format!("value {i}")))
        .collect();
    let bytes: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            let p = d.join(format!("w{i}.safetensors"));
            // A new map each time: each has its own random order.
            let m = meta.clone().into_iter().collect();
            w.save_with(&p, &g, Vec::new(), m).unwrap();
            std::fs::read(&p).unwrap()
        })
        .collect();
    assert!(bytes.iter().all(|b| *b == bytes[0]), "saves differ");
    assert_eq!(Weights::load(d.join("w0.safetensors"), &g).unwrap(), w);
}

/// Copies checkpoint `src` to `dst` with its progress JSON and its tensors edited.
fn tamper(
    src: &Path,
    dst: &Path,
    edit_progress: impl FnOnce(&mut serde_json::Value),
    edit_tensor: impl Fn(&str, &mut Vec<f32>),
) {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    let mut p: serde_json::Value = serde_json::from_str(&meta["netc.progress"]).unwrap();
    edit_progress(&mut p);
    meta.insert("netc.progress".into(), p.to_string());
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let mut data = v.data().to_vec();
            if v.dtype() == Dtype::F32 {
                let mut f: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                edit_tensor(&name, &mut f);
                data = f.iter().flat_map(|x| x.to_le_bytes()).collect();
            }
            (name, v.dtype(), v.shape().to_vec(), data)
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(n, t, s, d)| (n.clone(), TensorView::new(*t, s.clone(), d).unwrap()));
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// Nothing in a checkpoint is trusted: each bad field or tensor is an error naming it (and
/// the first bad element), before any training.
#[test]
fn checkpoint_fields_are_checked_on_resume() {
    let d = scratch("tamper");
    let data = tiny_data(&d);
    let good = d.join("good.safetensors");
    // Epoch 1 finished, stopped after batch 2 of epoch 2 (step 7).
    let o = train_tiny(
        &data,
        &["--epochs", "3", "--max-steps", "7", "--save", s(&good)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bad = d.join("bad.safetensors");
    let resume = |epochs: &str, want: &str| {
        let before = std::fs::read(&bad).unwrap();
        let o = train_tiny(&data, &["--epochs", epochs, "--resume", s(&bad)]);
        assert_eq!(o.status.code(), Some(1), "{want}: {}", stderr(&o));
        assert_eq!(
            std::fs::read(&bad).unwrap(),
            before,
            "the checkpoint was touched"
        );
        stderr(&o)
    };
    let none = |_: &str, _: &mut Vec<f32>| {};
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            Box::new(|p| {
                p["batch"] = 9999.into();
                p["step"] = 20000.into();
                p["epoch_sums"] = serde_json::Value::Null;
            }),
            "3",
            "netc.progress.batch = 9999 but an epoch of this data has 5 batches (of 32)",
        ),
        (
            Box::new(|p| p["step"] = u64::MAX.into()),
            "3",
            "netc.progress.step = 18446744073709551615 but",
        ),
        (
            Box::new(|p| p["step"] = 2.into()),
            "3",
            "netc.progress.step = 2 but netc.progress.epoch = 1 and netc.progress.batch = 2 need at least 3",
        ),
        (
            Box::new(|p| p["epoch"] = u64::MAX.into()),
            "3",
            "netc.progress.epoch = 18446744073709551615 but netc.progress.history has 1",
        ),
        (
            Box::new(|p| p["epoch_sums"]["seen"] = 1000.into()),
            "3",
            "netc.progress.epoch_sums.seen = 1000 but 2 batches of 32 are 64",
        ),
        (
            Box::new(|p| p["epoch_sums"]["correct"] = 65.into()),
            "3",
            "netc.progress.epoch_sums.correct = 65",
        ),
        (
            Box::new(|p| {
                p["batch_size"] = 16.into();
                p["epoch_sums"]["seen"] = 32.into();
                p["epoch_sums"]["correct"] = 0.into();
            }),
            "3",
            "netc.progress.batch_size = 16, but this run uses batches of 32",
        ),
        (
            Box::new(|_| {}),
            "1",
            "netc.progress.epoch = 1 (batch 2) is beyond the end of this training of 1 epochs",
        ),
    ];
    for (edit, epochs, want) in cases {
        tamper(&good, &bad, edit, none);
        let e = resume(epochs, want);
        assert!(e.contains(want), "want `{want}` in {e}");
        assert!(e.contains("bad.safetensors"), "{e}");
    }
    // A NaN in a weight, an infinity in a momentum buffer: named with the first bad index.
    let cases: [(&str, usize, f32, &str); 3] = [
        (
            "conv1.weight",
            5,
            f32::NAN,
            "`conv1.weight[0, 0, 1, 0]` is NaN",
        ),
        (
            "optimizer.m.fc1.weight",
            401,
            f32::INFINITY,
            "`optimizer.m.fc1.weight[1, 1]` is inf",
        ),
        ("fc3.bias", 9, f32::NEG_INFINITY, "`fc3.bias[9]` is -inf"),
    ];
    for (name, at, value, want) in cases {
        tamper(
            &good,
            &bad,
            |_| {},
            |n, v| {
                if n == name {
                    v[at] = value;
                }
            },
        );
        let e = resume("3", want);
        assert!(e.contains(want), "want `{want}` in {e}");
    }
}

/// The final JSON names a file only when it exists: no curves before an epoch has finished,
/// no checkpoint when none was written (a NaN at the second step).
#[test]
fn the_json_names_only_files_that_were_written() {
    let d = scratch("json_files");
    let data = tiny_data(&d);
    let out = d.join("run");
    let o = train_tiny(&data, &["--max-steps", "2", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = metrics(&o);
    assert_eq!(m["curves"], serde_json::Value::Null, "{m}");
    assert!(!out.join("curves.png").exists());
    let ck = m["checkpoint"].as_str().expect("a checkpoint");
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(ck).is_file(),
        "{ck}"
    );
    // One finished epoch: both, and both exist.
    let o = train_tiny(&data, &["--epochs", "1", "--out", s(&out)]);
    let m = metrics(&o);
    for k in ["curves", "checkpoint"] {
        let f = m[k].as_str().unwrap_or_else(|| panic!("no {k}: {m}"));
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(f).is_file(),
            "{f}"
        );
    }
    // A NaN before anything was saved: no checkpoint named.
    let fresh = d.join("nan");
    let o = train_tiny(&data, &["--lr", "1e30", "--out", s(&fresh)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let m = metrics(&o);
    assert_eq!(m["outcome"], "non_finite");
    assert_eq!(m["checkpoint"], serde_json::Value::Null, "{m}");
    assert_eq!(m["curves"], serde_json::Value::Null, "{m}");
    assert!(
        stderr(&o).contains("no checkpoint was written"),
        "{}",
        stderr(&o)
    );
}

/// `--resume X` writes to `--save`, else to `--out`'s checkpoint (X stays as it was), else
/// back to X; the header line says where.
#[test]
fn resume_writes_where_the_header_says() {
    let d = scratch("resume_where");
    let data = tiny_data(&d);
    let x = d.join("x.safetensors");
    let o = train_tiny(
        &data,
        &["--epochs", "2", "--max-steps", "2", "--save", s(&x)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = std::fs::read(&x).unwrap();
    let header = |o: &Output| {
        let e = stderr(o);
        e.lines()
            .find_map(|l| l.strip_prefix("  checkpoint: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no checkpoint line: {e}"))
    };
    // Not quiet, for the header: the base arguments without `-q`.
    let run = |more: &[&str]| {
        let base = [
            "train",
            "specs/lenet5.net",
            "--data",
            s(&data),
            "--batch",
            "32",
            "--threads",
            "1",
            "--epochs",
            "2",
            "--max-steps",
            "1",
            "--resume",
            s(&x),
        ];
        let o = netc(&[&base[..], more].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o
    };
    let out = d.join("out");
    let o = run(&["--out", s(&out)]);
    let want = out.join("checkpoint.safetensors");
    assert_eq!(header(&o), want.display().to_string());
    assert_eq!(metrics(&o)["checkpoint"], want.display().to_string());
    assert_eq!(progress(&want).step, 3);
    assert_eq!(
        std::fs::read(&x).unwrap(),
        before,
        "--out's run overwrote the resumed file"
    );
    let y = d.join("y.safetensors");
    let o = run(&["--out", s(&out), "--save", s(&y)]);
    assert_eq!(header(&o), y.display().to_string());
    assert_eq!(progress(&y).step, 3);
    assert_eq!(std::fs::read(&x).unwrap(), before);
    let o = run(&[]);
    assert_eq!(header(&o), x.display().to_string());
    assert_eq!(progress(&x).step, 3);
    // Resuming a run directory's `checkpoint.safetensors` in place finishes its epoch and puts
    // the curves beside it as `curves.png`, where the first run would have.
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--data",
        s(&data),
        "--batch",
        "32",
        "--threads",
        "1",
        "--epochs",
        "1",
        "--resume",
        s(&want),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        metrics(&o)["curves"],
        out.join("curves.png").display().to_string()
    );
    assert!(out.join("curves.png").exists());
    let help = netc(&["train", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("else the --resume file"), "{help}");
}

/// Temporary files of this run's outputs left by a killed process are removed at the start;
/// those of a live process and other files stay.
#[test]
fn stale_temporary_files_are_removed_at_start() {
    let d = scratch("stale");
    let data = tiny_data(&d);
    let out = d.join("run");
    std::fs::create_dir_all(&out).unwrap();
    // The id of a process that has exited (and been reaped).
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let stale = [
        format!(".checkpoint.safetensors.{dead}.0.tmp"),
        format!(".curves.png.{dead}-3.tmp"),
        format!(".m.json.{dead}.12.tmp"),
    ];
    let kept = [
        format!(".checkpoint.safetensors.{live}.1.tmp"),
        format!(".curves.png.{live}-0.tmp"),
        format!(".checkpoint.safetensors.{dead}.x.tmp"),
        format!(".notes.txt.{dead}.0.tmp"),
        format!("checkpoint.safetensors.{dead}.0.tmp"),
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(out.join(f), b"partial").unwrap();
    }
    let mj = out.join("m.json");
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--data",
        s(&data),
        "--batch",
        "32",
        "--max-steps",
        "1",
        "--out",
        s(&out),
        "--metrics-json",
        s(&mj),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in &stale {
        assert!(!out.join(f).exists(), "{f} is still there");
        assert!(
            stderr(&o).contains(f.as_str()),
            "{f} not reported: {}",
            stderr(&o)
        );
    }
    for f in &kept {
        assert!(out.join(f).exists(), "{f} was removed");
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

/// A fully convolutional classifier (its last layer a convolution over the whole remaining
/// map, output `[K, 1, 1]`) trains with cross-entropy on class labels; an output that is a map
/// of scores (`[K, 3, 3]`) is refused with the shapes that would work.
#[test]
fn a_fully_convolutional_classifier_trains() {
    let d = scratch("fully_conv");
    let data = tiny_data(&d);
    let spec = |last: &str| {
        let p = d.join(format!("fc{last}.net"));
        std::fs::write(
            &p,
            format!(
                "model fcn(classes: int = 10) {{\n  input image: [1, 28, 28]\n  \
                 conv1: conv(6, 5, pad=2)\n  relu\n  maxpool(2)\n  conv2: conv(16, 5)\n  \
                 relu\n  maxpool(2)\n  fc: conv(classes, {last})\n}}\n"
            ),
        )
        .unwrap();
        p
    };
    let whole = spec("5");
    let o = netc(&[
        "train",
        s(&whole),
        "--data",
        s(&data),
        "--batch",
        "32",
        "--epochs",
        "2",
        "--out",
        s(&d.join("run")),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = metrics(&o);
    assert_eq!(m["outcome"], "finished");
    let loss = m["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss < 2.3, "{m}");
    assert!(m["test_accuracy"].as_f64().unwrap() > 0.2, "{m}");
    let map = spec("3");
    let o = netc(&["train", s(&map), "--data", s(&data), "-q"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("is [10, 3, 3]; training with labels needs class scores [K] or [K, 1, 1]"),
        "{e}"
    );
}
