//! `netc train` on verification models: triplets with online mining, pairs for a learned
//! similarity or a contrastive loss, the open-set evaluation's JSON keys, the threshold kept
//! in the checkpoint, and the errors of data that cannot give triplets or pairs.

use std::path::Path;

use netc::data::rng::Rng;
use netc::io::npy::{NpzArray, write_arrays};

mod cli_support;
use cli_support::{metrics, netc, s, scratch, stderr};

/// `per` 8×8 images of each of `ids` identities (at most 8): identity `i` is a horizontal bar
/// in row `2·(i % 4)` and a vertical bar in column `2·(i / 4) + 1`, each at a random offset,
/// plus noise. Held-out identities 6 and 7 combine a row and a column that identities 0-5
/// also have, so an embedding of bars can generalize to them.
fn bars(ids: usize, per: usize, seed: u64, path: &Path) {
    let mut rng = Rng::new(seed);
    let n = ids * per;
    let (mut x, mut y) = (vec![0f32; n * 64], Vec::new());
    for i in 0..n {
        let id = i % ids;
        let img = &mut x[i * 64..(i + 1) * 64];
        let (row, col) = (2 * (id % 4), 2 * (id / 4) + 1);
        let start = rng.below(4) as usize;
        for c in start..start + 4 {
            img[row * 8 + c] = 1.0;
        }
        let start = rng.below(4) as usize;
        for r in start..start + 4 {
            img[r * 8 + col] = 1.0;
        }
        for v in img.iter_mut() {
            *v += 0.2 * rng.uniform() as f32;
        }
        y.push(id as i64);
    }
    write_arrays(
        path,
        &[
            ("x", NpzArray::F32(&[n, 1, 8, 8], &x)),
            ("y", NpzArray::I64(&[n], &y)),
        ],
    )
    .unwrap();
}

const EMBED: &str = "
block embed_net() {
  flatten
  dense(16)
  relu
  dense(8)
  l2_normalize
}
";

fn triplet_spec() -> String {
    format!(
        "{EMBED}
model trip {{
  input anchor: [1, 8, 8]
  input positive: [1, 8, 8]
  input negative: [1, 8, 8]
  embed = shared embed_net()
  loss = triplet_loss(embed(anchor), embed(positive), embed(negative), margin=0.2)
  output loss
  train {{ optimizer: adam(lr=0.01), batch: 16, epochs: 3 }}
}}
"
    )
}

#[test]
fn a_triplet_model_trains_with_mining_and_reports_open_set_figures() {
    let d = scratch("verification/trip");
    let spec = d.join("trip.net");
    std::fs::write(&spec, triplet_spec()).unwrap();
    let data = d.join("bars.npz");
    bars(8, 60, 1, &data);
    for mining in ["batch-hard", "semi-hard", "random"] {
        let out = d.join(mining);
        let o = netc(&[
            "train",
            s(&spec),
            "--data",
            s(&data),
            "--identities",
            "0-5/6-7",
            "--mining",
            mining,
            "--batch",
            "18",
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{mining}: {}", stderr(&o));
        // The header says what a step trains on and how the identities split.
        let step = match mining {
            "random" => "random triplets (margin 0.2), 18 a step".to_string(),
            m => format!("triplets (margin 0.2) by {m} mining, 4 identities × 4 images a step"),
        };
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "verification: {step}; identities 0-5 train (300 images), 6-7 evaluate, never \
                 seen in training (120 images; 500 same and 500 different pairs per identity)"
            )),
            "{e}"
        );
        let m = metrics(&o);
        // Throughput counts the samples of a step (4 × 4 when mined, not --batch 16 or 18).
        let per_step = m["images_per_second"].as_f64().unwrap() * m["seconds"].as_f64().unwrap()
            / m["steps"].as_f64().unwrap();
        let want = if mining == "random" { 18.0 } else { 16.0 };
        assert!(
            (per_step - want).abs() < 1e-6,
            "{mining}: {per_step} per step: {m}"
        );
        let acc = m["verification_accuracy"].as_f64().unwrap();
        let auc = m["auc"].as_f64().unwrap();
        // Held-out identities 6 and 7 (bars in rows 6 and 7) were never trained on.
        assert!(acc > 0.75 && acc <= 1.0, "{mining}: accuracy {acc}: {m}");
        assert!(auc > 0.8 && auc <= 1.0, "{mining}: AUC {auc}: {m}");
        let t = m["threshold"].as_f64().unwrap();
        assert!(t > 0.0 && t < 2.0, "a distance between unit vectors: {t}");
        // The checkpoint keeps the threshold for `netc verify`.
        let ck = netc::train::checkpoint::load(
            &out.join("checkpoint.safetensors"),
            &netc::load_file(&spec, &netc::Options::default())
                .unwrap()
                .graph,
        )
        .unwrap();
        assert_eq!(ck.progress.unwrap().threshold, Some(t));
    }
}

#[test]
fn pair_models_train_on_same_and_different_pairs() {
    let d = scratch("verification/pairs");
    let data = d.join("bars.npz");
    bars(8, 60, 2, &data);
    // A learned similarity (binary cross-entropy on one logit) and a contrastive loss.
    let learned = format!(
        "{EMBED}
model learned {{
  input x1: [1, 8, 8]
  input x2: [1, 8, 8]
  embed = shared embed_net()
  diff = sub(embed(x1), embed(x2)) |> abs
  logit: dense(1)
  output logit
  train {{ loss: bce_with_logits, optimizer: adam(lr=0.01), batch: 16, epochs: 12 }}
}}
"
    );
    let contrastive = format!(
        "{EMBED}
model contrast {{
  input x1: [1, 8, 8]
  input x2: [1, 8, 8]
  embed = shared embed_net()
  e1 = embed(x1)
  e2 = embed(x2)
  output e1, e2
  train {{ loss: contrastive(outputs=[e1, e2], margin=1), optimizer: adam(lr=0.01), batch: 16, epochs: 12 }}
}}
"
    );
    for (name, text) in [("learned", learned), ("contrast", contrastive)] {
        let spec = d.join(format!("{name}.net"));
        std::fs::write(&spec, text).unwrap();
        let o = netc(&[
            "train",
            s(&spec),
            "--data",
            s(&data),
            "--identities",
            "0-5/6-7",
            "--out",
            s(&d.join(name)),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let m = metrics(&o);
        let acc = m["verification_accuracy"].as_f64().unwrap();
        let auc = m["auc"].as_f64().unwrap();
        assert!(acc > 0.7, "{name}: accuracy {acc}: {m}");
        assert!(auc > 0.75, "{name}: AUC {auc}: {m}");
        if name == "learned" {
            let t = m["threshold"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&t), "a learned similarity: {t}");
        }
    }
}

#[test]
fn data_that_cannot_give_triplets_or_the_asked_identities_is_refused() {
    let d = scratch("verification/bad");
    let spec = d.join("trip.net");
    std::fs::write(&spec, triplet_spec()).unwrap();
    // One identity in all.
    let one = d.join("one.npz");
    bars(1, 30, 3, &one);
    let o = netc(&["train", s(&spec), "--data", s(&one)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("one.npz"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // An identity asked for that the data do not have.
    let data = d.join("bars.npz");
    bars(4, 30, 4, &data);
    let o = netc(&[
        "train",
        s(&spec),
        "--data",
        s(&data),
        "--identities",
        "0-1/2-7",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains('4') || err.contains('7'), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Flags that do not parse are usage errors.
    let o = netc(&["train", s(&spec), "--mining", "hardest"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("batch-hard"), "{}", stderr(&o));
    let o = netc(&["train", s(&spec), "--identities", "0-6"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The course's speed-up: with the embedding frozen, its vectors are computed once and only
/// the similarity head trains on them; the result is that of training the whole model with
/// the embedding frozen.
#[test]
fn a_frozen_embedding_is_computed_once_and_only_the_head_trains() {
    let d = scratch("verification/head");
    let data = d.join("bars.npz");
    bars(8, 40, 6, &data);
    let spec = d.join("learned.net");
    std::fs::write(
        &spec,
        format!(
            "{EMBED}
model learned {{
  input x1: [1, 8, 8]
  input x2: [1, 8, 8]
  embed = shared embed_net()
  diff = sub(embed(x1), embed(x2)) |> abs
  logit: dense(1)
  output logit
  train {{ loss: bce_with_logits, optimizer: adam(lr=0.01), batch: 16, epochs: 2 }}
}}
"
        ),
    )
    .unwrap();
    let run = |out: &str, more: &[&str]| {
        let mut args = vec![
            "train",
            s(&spec),
            "--data",
            s(&data),
            "--identities",
            "0-5/6-7",
            "--freeze",
            "embed",
            "--out",
        ];
        let out = d.join(out);
        args.push(s(&out));
        args.extend_from_slice(more);
        let o = netc(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        (o, out.join("checkpoint.safetensors"))
    };
    let (cached, ck1) = run("cached", &[]);
    assert!(
        stderr(&cached).contains("training images embedded once"),
        "{}",
        stderr(&cached)
    );
    let (whole, ck2) = run("whole", &["--no-cache-features"]);
    assert!(
        !stderr(&whole).contains("embedded once"),
        "{}",
        stderr(&whole)
    );
    let lg = netc::load_file(&spec, &netc::Options::default())
        .unwrap()
        .graph;
    let a = netc::train::checkpoint::load(&ck1, &lg).unwrap();
    let b = netc::train::checkpoint::load(&ck2, &lg).unwrap();
    // The head's weights agree to float rounding (the embeddings are computed by another
    // compiled program); the frozen embedding is untouched.
    for (i, p) in lg.params.iter().enumerate() {
        let (netc::io::weights::Value::F32(x), netc::io::weights::Value::F32(y)) =
            (&a.weights.values[i], &b.weights.values[i])
        else {
            continue;
        };
        let diff = x
            .iter()
            .zip(y.iter())
            .map(|(u, v)| (u - v).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{}: max difference {diff}", p.path);
    }
    let (ma, mb) = (metrics(&cached), metrics(&whole));
    assert_eq!(ma["feature_cache"], "embeddings", "{ma}");
    assert!(mb["feature_cache"].is_null(), "{mb}");
    let (aa, ab) = (
        ma["verification_accuracy"].as_f64().unwrap(),
        mb["verification_accuracy"].as_f64().unwrap(),
    );
    assert!((aa - ab).abs() < 0.01, "{aa} vs {ab}");
}
