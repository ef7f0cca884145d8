//! Results do not depend on the thread count: inference outputs, a training step's loss and
//! every gradient and running statistic, and the weights after two SGD steps are the same
//! bits at 1, 2, 3 and 4 threads (README, "Determinism"). Small models and sizes, so the
//! test stays fast; batches chosen so the pool splits images, tile ranges, rows and channels
//! differently at each thread count.

use ndarray::{ArrayD, IxDyn};
use netc::io::weights::Weights;
use netc::model::{CompileOptions, compile, params_f32};
use netc::train::Trainer;
use netc::train_config::{Loss, Optimizer};
use netc::{Options, Spec, load_file};

const THREADS: [usize; 4] = [1, 2, 3, 4];

fn spec(file: &str, sets: &[&str]) -> Spec {
    let options = Options::with_sets(sets).unwrap();
    load_file(format!("specs/{file}.net"), &options).unwrap_or_else(|e| panic!("{e}"))
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The names (of `got`'s tensors) whose bits differ from `want`'s, with the largest
/// relative difference.
fn differing(want: &[(String, Vec<f32>)], got: &[(String, Vec<f32>)]) -> Vec<String> {
    assert_eq!(want.len(), got.len());
    want.iter()
        .zip(got)
        .filter(|((_, a), (_, b))| bits(a) != bits(b))
        .map(|((name, a), (_, b))| {
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
            let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            format!("{name} (max diff {:.1e} relative)", d / scale)
        })
        .collect()
}

/// The model's outputs at batch `batch` with `threads` threads, on a fixed input.
fn infer(s: &Spec, batch: usize, threads: usize) -> Vec<(String, Vec<f32>)> {
    let w = Weights::init(&s.graph, 7);
    let mut exe = compile(
        s,
        &params_f32(&w),
        CompileOptions {
            batch,
            threads,
            memory_limit: None,
        },
    )
    .unwrap();
    let mut shape = vec![batch];
    shape.extend(&s.graph.inputs[0].shape);
    let n = shape.iter().product();
    let x = ArrayD::from_shape_vec(IxDyn(&shape), values(n, 11)).unwrap();
    let name = s.graph.inputs[0].name.clone();
    exe.run(&[(name.as_str(), &x)])
        .unwrap()
        .into_iter()
        .map(|(n, a)| (n, a.iter().copied().collect()))
        .collect()
}

/// Two SGD steps at batch `batch` with `threads` threads: the first step's loss, gradients
/// and running statistics, then the second's loss and the weights after it.
fn train(s: &Spec, batch: usize, threads: usize) -> Vec<(String, Vec<f32>)> {
    let w = Weights::init(&s.graph, 7);
    let opt = Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 1e-4,
    };
    let loss = Loss::CrossEntropy {
        label_smoothing: 0.1,
    };
    let mut tr = Trainer::new(&s.graph, w, batch, loss, opt, threads).unwrap();
    tr.set_seed(3);
    let per: usize = s.graph.inputs[0].shape.iter().product();
    let classes = tr.classes();
    let labels: Vec<i64> = (0..batch).map(|i| ((i * 7 + 3) % classes) as i64).collect();
    let mut out = Vec::new();
    for step in 0..2u64 {
        let x = values(batch * per, 100 + step);
        let st = tr.step(&x, &labels, 0.05).unwrap();
        out.push((format!("loss of step {step}"), vec![st.loss]));
        if step == 0 {
            let g = tr.graph().clone();
            let exe = tr.executable();
            for (_, name) in g.grads.iter().chain(&g.stats) {
                out.push((name.clone(), exe.output(name).unwrap().to_vec()));
            }
        }
    }
    let w = tr.weights();
    for (p, v) in s.graph.params.iter().zip(&w.values) {
        if let Some(a) = v.as_f32() {
            out.push((
                format!("{} after 2 steps", p.path),
                a.iter().copied().collect(),
            ));
        }
    }
    out
}

/// Runs `f` at every thread count and checks each result against one thread's, bit for bit.
fn same_at_every_thread_count(
    what: &str,
    f: impl Fn(usize) -> Vec<(String, Vec<f32>)>,
    failures: &mut Vec<String>,
) {
    let want = f(1);
    for &t in &THREADS[1..] {
        let diff = differing(&want, &f(t));
        if !diff.is_empty() {
            failures.push(format!("{what}, {t} threads: {}", diff.join(", ")));
        }
    }
}

#[test]
fn inference_is_bit_identical_at_every_thread_count() {
    let cases: &[(&str, &[&str], &[usize])] = &[
        ("lenet5", &[], &[1, 5, 16]),
        ("mini_resnet", &[], &[1, 3, 6]),
        ("mini_inception", &[], &[1, 3]),
        ("edge_detect", &["size=40"], &[1, 2]),
        ("vgg_small", &["size=16"], &[1, 3]),
        ("resnet18", &["size=32", "classes=10"], &[1, 3, 16]),
    ];
    let mut failures = Vec::new();
    for (file, sets, batches) in cases {
        let s = spec(file, sets);
        for &b in *batches {
            let what = format!("{file} {sets:?} inference b{b}");
            same_at_every_thread_count(&what, |t| infer(&s, b, t), &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn training_is_bit_identical_at_every_thread_count() {
    let cases: &[(&str, &[&str], &[usize])] = &[
        ("lenet5", &[], &[5, 16]),
        ("mini_resnet", &[], &[3, 8]),
        ("mini_inception", &[], &[3]),
        ("vgg_small", &["size=16"], &[6]),
        ("resnet18", &["size=32", "classes=10"], &[5]),
    ];
    let mut failures = Vec::new();
    for (file, sets, batches) in cases {
        let s = spec(file, sets);
        for &b in *batches {
            let what = format!("{file} {sets:?} training b{b}");
            same_at_every_thread_count(&what, |t| train(&s, b, t), &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
