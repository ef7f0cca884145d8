//! `netc bench --train`: the library report and the command, on small models for a couple of
//! steps. Only the fields' sanity is checked, never a timing.

use std::path::Path;
use std::process::Command;

use netc::Options;
use netc::train::bench::{TrainBenchOptions, bench_train};

#[test]
fn bench_train_reports_sane_fields() {
    let opts = Options::with_sets(&["size=16", "classes=5"]).unwrap();
    let r = bench_train(
        Path::new("specs/lenet5.net"),
        &opts,
        &TrainBenchOptions {
            batch: 4,
            threads: 2,
            steps: 2,
            warmup: 1,
            profile: true,
            seed: 7,
            memory_limit: None,
        },
    )
    .unwrap();
    assert_eq!(r.model, "lenet5");
    assert_eq!((r.batch, r.threads, r.steps, r.warmup), (4, 2, 2, 1));
    assert!(r.kernels > 0 && r.functions > 0);
    assert!(r.step.min <= r.step.median && r.step.median <= r.step.max);
    assert!(r.step.min <= r.step.mean && r.step.mean <= r.step.max);
    assert!(r.images_per_s.is_finite() && r.images_per_s > 0.0);
    assert!(r.compile_time > r.codegen_time);
    assert!(r.first_loss.is_finite() && r.last_loss.is_finite());
    // ln(5) for an untrained 5-class model, give or take.
    assert!(r.first_loss > 0.5 && r.first_loss < 5.0, "{}", r.first_loss);
    // conv1 6·1·5·5+6, conv2 16·6·5·5+16, fc1 (16·2·2)·120+120, fc2 120·84+84, fc3 84·5+5.
    let params = 156 + 2416 + 7800 + 10164 + 425;
    assert_eq!(r.trained_elements, params);
    assert_eq!(r.optimizer_bytes, 4 * params);
    assert_eq!(r.param_bytes, 4 * params);
    assert!(r.arena_bytes > 0 && r.arena_bytes <= r.unshared_bytes);
    if cfg!(target_os = "linux") {
        assert!(r.peak_rss_bytes.unwrap() > r.arena_bytes as u64);
    }
    let p = r.profile.as_ref().expect("a profile");
    assert!(!p.kernels.is_empty() && !p.classes.is_empty());
    assert_eq!(
        p.classes.iter().map(|c| c.kernels).sum::<usize>(),
        p.kernels.len()
    );
    let classes: Vec<&str> = p.classes.iter().map(|c| c.class).collect();
    for want in [
        "conv forward (gemm)",
        "conv backward data (host)",
        "conv backward weight (host)",
        "pool backward (host)",
        "matmul (gemm)",
    ] {
        assert!(classes.contains(&want), "{want} missing from {classes:?}");
    }
    let j = r.to_json();
    assert_eq!(j["mode"], "train");
    assert_eq!(j["batch"], 4);
    assert!(j["step_ms"]["median"].as_f64().unwrap() > 0.0);
    assert_eq!(
        j["profile"]["kernels"].as_array().unwrap().len(),
        p.kernels.len()
    );
    let text = r.to_text();
    assert!(text.contains("training step, batch 4"), "{text}");
    assert!(text.contains("optimizer update"), "{text}");
}

#[test]
fn bench_train_command_json_and_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netc"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("netc runs")
    };
    let o = run(&[
        "bench",
        "specs/lenet5.net",
        "--train",
        "--batch",
        "3",
        "--threads",
        "1",
        "--steps",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["mode"], "train");
    assert_eq!(j["steps"], 2);
    assert_eq!(j["batch"], 3);
    assert!(j["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(j.get("profile").is_none());

    // A model with two outputs cannot be trained with cross-entropy: exit 1 with a message.
    let bad = run(&["bench", "specs/triplet.net", "--train", "--steps", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(!bad.stderr.is_empty());
}
