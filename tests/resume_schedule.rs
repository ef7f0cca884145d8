//! Resuming training: `--epochs` changed on resume never makes the learning rate jump back up
//! (the cosine's horizon is carried in the checkpoint and extended from where training
//! stands), an unchanged resume keeps the exact schedule, a resumed epoch's seconds cover the
//! whole epoch; and the rough edges around it: a model with more classes than the data warns
//! once, `cifar10` as a data source says how to get CIFAR-10, the README's `data:` example
//! loads.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use netc::data::{Dataset, Normalize, Pixels, Split};
use netc::io::weights::Weights;
use netc::train::checkpoint;
use netc::train::session::{self, Event, Observer, Outcome, Settings};
use netc::train::{Horizon, learning_rate, learning_rate_in};
use netc::train_config::{Loss, Optimizer, Schedule};

mod cli_support;
use cli_support::{netc, scratch};

const TINY: &str = "model tiny {\n  input x: [1, 4, 4]\n  flatten\n  fc: dense(3)\n}\n";

fn tiny() -> netc::Spec {
    netc::load_str("tiny.net", TINY, &netc::Options::default()).unwrap()
}

/// 24 training and 6 test samples of 1×4×4 bytes, 3 classes: 6 batches of 4 per epoch.
fn data() -> Split {
    let set = |n: usize, name: &str| Dataset {
        name: name.into(),
        sample_shape: vec![1, 4, 4],
        pixels: Pixels::U8((0..n * 16).map(|i| (i * 37 % 251) as u8).collect()),
        labels: (0..n).map(|i| (i % 3) as i64).collect(),
        classes: 3,
        class_names: vec![],
        fields: vec![],
        objects: vec![],
    };
    Split {
        train: set(24, "tiny train"),
        test: set(6, "tiny test"),
    }
}

fn settings(epochs: usize, schedule: Schedule, ck: &Path, max_steps: Option<u64>) -> Settings {
    Settings {
        epochs,
        batch: 4,
        objective: Loss::CrossEntropy {
            label_smoothing: 0.0,
        }
        .into(),
        optimizer: Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule,
        seed: 1,
        threads: 1,
        augment: vec![],
        normalize: Normalize::none(1),
        checkpoint: Some(ck.to_path_buf()),
        max_steps,
        memory_limit: None,
        identities: None,
        mining: Default::default(),
        no_cache: false,
    }
}

/// Records every step's learning rate and every epoch's seconds and speed.
#[derive(Default)]
struct Log {
    lrs: RefCell<Vec<f64>>,
    epochs: RefCell<Vec<(f64, f64)>>,
}

impl Observer for &Log {
    fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Step { lr, .. } => self.lrs.borrow_mut().push(*lr),
            Event::Epoch(r) => self
                .epochs
                .borrow_mut()
                .push((r.seconds, r.images_per_second)),
            _ => {}
        }
    }
}

/// Trains `tiny` with `s`, from scratch or from the checkpoint at `resume`; the learning rates.
fn train(s: &Settings, resume: Option<&Path>) -> (Vec<f64>, Outcome, Log) {
    let spec = tiny();
    let ck = resume.map(|p| checkpoint::load(p, &spec.graph).unwrap());
    let log = Log::default();
    let mut obs = &log;
    let w = Weights::init(&spec.graph, 1);
    let r = session::run(&spec.graph, w, ck, &data(), s, &mut obs).unwrap();
    let lrs = log.lrs.borrow().clone();
    (lrs, r.outcome, log)
}

fn cosine() -> Schedule {
    Schedule::Cosine {
        min_lr: 0.0,
        warmup: 0,
    }
}

#[test]
fn extending_a_stopped_cosine_run_does_not_raise_the_lr() {
    let d = scratch("resume/extend-stopped");
    let ck = d.join("ck.safetensors");
    // 2 epochs planned, stopped after 8 steps (epoch 2, batch 2).
    let (before, out, _) = train(&settings(2, cosine(), &ck, Some(8)), None);
    assert!(
        matches!(out, Outcome::Stopped { epoch: 1, batch: 2 }),
        "{out:?}"
    );
    let p = checkpoint::load(&ck, &tiny().graph)
        .unwrap()
        .progress
        .unwrap();
    assert_eq!(p.horizon.unwrap().epochs, 2);
    // Extended to 4 epochs.
    let (after, out, log) = train(&settings(4, cosine(), &ck, None), Some(&ck));
    assert_eq!(out, Outcome::Finished);
    assert_eq!(after.len(), 4 * 6 - 8);
    let last = *before.last().unwrap();
    assert!(
        after[0] <= last,
        "first after {} > last before {last}",
        after[0]
    );
    // Continuous: no more than one step's decrease of the old schedule.
    assert!(last - after[0] < last - learning_rate(&cosine(), 0.1, 2, 1, 3.0 / 6.0) + 1e-12);
    assert!(after.windows(2).all(|w| w[1] <= w[0]), "{after:?}");
    // ... and it still anneals to min_lr by the new end.
    assert!(*after.last().unwrap() < 0.01 * last, "{after:?}");
    // The resumed epoch's seconds cover the whole epoch: its 4 remaining batches took
    // `24 - 8` samples' time in this run, and seconds × speed covers all 24 samples.
    let (secs, ips) = log.epochs.borrow()[0];
    assert!(secs * ips >= 24.0 * (1.0 - 1e-9), "{secs} s at {ips} img/s");
    assert_eq!(
        session::epoch_seconds(2.0, 0.5, 6, 2),
        2.0 * 6.0 / 4.0 + 0.5
    );
    assert_eq!(session::epoch_seconds(2.0, 0.5, 6, 0), 2.5);
}

#[test]
fn extending_a_finished_cosine_run_stays_at_min_lr() {
    let d = scratch("resume/extend-finished");
    let ck = d.join("ck.safetensors");
    let (before, out, _) = train(&settings(2, cosine(), &ck, None), None);
    assert_eq!(out, Outcome::Finished);
    let p = checkpoint::load(&ck, &tiny().graph)
        .unwrap()
        .progress
        .unwrap();
    let s3 = settings(3, cosine(), &ck, None);
    let note = session::horizon_note(&p, &s3, 6).unwrap();
    assert!(
        note.contains("planned for 2 epochs") && note.contains("--weights"),
        "{note}"
    );
    let (after, _, _) = train(&s3, Some(&ck));
    assert_eq!(after.len(), 6);
    let last = *before.last().unwrap();
    assert!(after.iter().all(|&lr| lr <= last), "{after:?} after {last}");
}

#[test]
fn an_unchanged_resume_keeps_the_exact_schedule() {
    let d = scratch("resume/same");
    let (straight, _, _) = train(&settings(3, cosine(), &d.join("a.safetensors"), None), None);
    let ck = d.join("b.safetensors");
    let (first, _, _) = train(&settings(3, cosine(), &ck, Some(7)), None);
    let (rest, _, _) = train(&settings(3, cosine(), &ck, None), Some(&ck));
    let both: Vec<f64> = first.into_iter().chain(rest).collect();
    assert_eq!(both, straight, "bit for bit");
    // The horizon formula is the plain schedule's when nothing changes.
    for t in 0..30 {
        let (e, f) = (t / 6, (t % 6) as f64 / 6.0);
        let s = Schedule::Cosine {
            min_lr: 0.001,
            warmup: 1,
        };
        let h = Horizon::new(&s, 5);
        assert_eq!(
            learning_rate(&s, 0.1, 5, e, f).to_bits(),
            learning_rate_in(&s, 0.1, &h, e, f).to_bits()
        );
        assert_eq!(h.extend(&s, t as f64 / 6.0, 5), h);
    }
}

#[test]
fn horizon_rules() {
    let s = Schedule::Cosine {
        min_lr: 0.0,
        warmup: 2,
    };
    // In the warmup: planned over the new total (the warmup depends on time alone).
    let h = Horizon::new(&s, 4).extend(&s, 1.5, 8);
    assert_eq!(h, Horizon::new(&s, 8));
    // After it: continuous at the resume point, for longer and for shorter trainings.
    for new in [4, 6, 20] {
        let old = Horizon::new(&s, 5);
        let h = old.extend(&s, 3.25, new);
        let lr = |h: &Horizon, t: f64| learning_rate_in(&s, 1.0, h, t as usize, t.fract());
        assert!((lr(&h, 3.25) - lr(&old, 3.25)).abs() < 1e-12, "{new}");
        assert!(lr(&h, new as f64) < 1e-12, "{new}: ends at min_lr");
    }
    // A new end before the resume point (refused by the checkpoint's check): at min_lr.
    let h = Horizon::new(&s, 5).extend(&s, 3.25, 3);
    assert_eq!(learning_rate_in(&s, 1.0, &h, 3, 0.5), 0.0);
    // Step and constant schedules do not depend on the horizon: they simply go on.
    let step = Schedule::Step {
        step_size: 1,
        gamma: 0.5,
        warmup: 0,
    };
    let h = Horizon::new(&step, 2).extend(&step, 2.0, 4);
    assert_eq!(learning_rate_in(&step, 1.0, &h, 2, 0.0), 0.25);
    assert_eq!(learning_rate_in(&step, 1.0, &h, 3, 0.5), 0.125);
    // A checkpoint's horizon is checked.
    let bad = Horizon {
        from_epoch: f64::NAN,
        from_progress: 0.0,
        epochs: 3,
    };
    assert!(bad.check().is_err());
}

// ---- through the binary ----

/// 48 training and 12 test images of 28×28 bytes with labels 0–2, as IDX files.
fn three_classes(dir: &Path) -> PathBuf {
    let data = dir.join("three");
    std::fs::create_dir_all(&data).unwrap();
    for (split, n) in [("train", 48usize), ("t10k", 12)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let px: Vec<u8> = (0..n * 784).map(|i| (i * 31 % 255) as u8).collect();
        let enc = netc::data::idx::encode;
        std::fs::write(
            data.join(format!("{split}-images-idx3-ubyte")),
            enc(&[n as u32, 28, 28], &px),
        )
        .unwrap();
        std::fs::write(
            data.join(format!("{split}-labels-idx1-ubyte")),
            enc(&[n as u32], &labels),
        )
        .unwrap();
    }
    data
}

#[test]
fn more_classes_than_the_data_warns_once() {
    let d = scratch("resume/classes");
    let data = three_classes(&d);
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch",
        "16",
        "--threads",
        "1",
        "-q",
        "--out",
        d.join("run").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains("has 10 classes but the data have 3") && err.contains("--set classes=3"),
        "{err}"
    );
    // With as many classes as the data: no warning.
    let o = netc(&[
        "train",
        "specs/lenet5.net",
        "--set",
        "classes=3",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch",
        "16",
        "--threads",
        "1",
        "-q",
        "--out",
        d.join("run3").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

fn rgb32() -> netc::layer_graph::InputInfo {
    netc::layer_graph::InputInfo {
        name: "image".into(),
        node: 0,
        shape: vec![3, 32, 32],
        mean: vec![],
        std: vec![],
    }
}

#[test]
fn cifar10_is_not_a_built_in_source_and_the_readme_says_so() {
    let e = netc::data::open("cifar10", &rgb32()).unwrap_err();
    let help = e.help.clone().unwrap_or_default();
    assert!(help.contains("cifar-10-binary.tar.gz"), "{e}: {help}");
    // The README's `data:` example names a directory that loads once CIFAR-10 is there.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("data: \""))
        .unwrap();
    let value = line.split('"').nth(1).unwrap();
    let d = scratch("resume/readme-data");
    let dir = d.join(value);
    std::fs::create_dir_all(&dir).unwrap();
    let rec = |n: usize| -> Vec<(u8, Vec<u8>)> {
        (0..n)
            .map(|i| ((i % 10) as u8, vec![i as u8; 3072]))
            .collect()
    };
    for k in 1..=5 {
        std::fs::write(
            dir.join(format!("data_batch_{k}.bin")),
            netc::data::cifar::encode(&rec(2)),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("test_batch.bin"),
        netc::data::cifar::encode(&rec(2)),
    )
    .unwrap();
    let split = netc::data::open(dir.to_str().unwrap(), &rgb32())
        .unwrap_or_else(|e| panic!("README's data: {value}: {e}"));
    assert_eq!(split.train.len(), 10);
}
