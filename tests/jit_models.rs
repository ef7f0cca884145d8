//! Whole models through the JIT: against PyTorch's outputs, and against the reference
//! interpreter for every shipped spec.

mod common;
use common::{REFERENCE_MODELS, reference_spec};
use ndarray::{ArrayD, IxDyn};
use netc::io::weights::Weights;
use netc::model::{CompileOptions, compile, params_f32};
use netc::{Options, load_file};

fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn reference_models_match_pytorch() {
    for name in REFERENCE_MODELS {
        let spec = reference_spec(name);
        let dir = format!("tests/data/reference/{name}");
        let w = Weights::load(format!("{dir}/weights.safetensors"), &spec.graph).unwrap();
        let x = netc::io::npy::read_f32(format!("{dir}/input.npy")).unwrap();
        let want = netc::io::npy::read_f32(format!("{dir}/eval_output.npy")).unwrap();
        for threads in [1, 2] {
            let opts = CompileOptions {
                batch: x.shape()[0],
                threads,
                memory_limit: None,
            };
            let mut exe = compile(&spec, &params_f32(&w), opts).unwrap();
            let out = exe.run(&[("image", &x)]).unwrap();
            let e = rel_err(&out[0].1, &want);
            assert!(e <= 1e-4, "{name}, {threads} threads: relative error {e:e}");
        }
    }
}

/// Deterministic pseudo-random input in [-1, 1).
fn input(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

#[test]
fn every_spec_matches_the_reference_interpreter() {
    // Reduced input sizes where the interpreter would be slow; odd batch sizes.
    let cases: &[(&str, &[&str], usize)] = &[
        ("lenet5", &[], 3),
        ("edge_detect", &["size=13"], 2),
        // Large enough at batch 1 that a convolution's rows are split across threads.
        ("edge_detect", &["size=71"], 1),
        ("resnet18", &["size=64", "classes=7"], 1),
        ("mini_resnet", &[], 3),
        ("mini_inception", &[], 3),
        ("resnet18", &["size=33", "classes=17"], 2),
        ("resnet50", &["size=35", "classes=11"], 1),
        ("googlenet", &["size=35", "classes=9"], 2),
        ("alexnet", &["size=67", "classes=5"], 1),
        ("vgg16", &["size=32", "classes=10"], 1),
        ("resnet34", &["size=32", "classes=10"], 2),
        ("vgg_small", &[], 2),
        ("triplet", &["size=16", "embedding=8"], 3),
        ("siamese", &["size=16", "embedding=8"], 3),
    ];
    for &(name, sets, batch) in cases {
        let spec = load_file(
            format!("specs/{name}.net"),
            &Options::with_sets(sets).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let w = Weights::init(&spec.graph, 7);
        let params = params_f32(&w);
        let inputs: Vec<(String, ArrayD<f32>)> = spec
            .graph
            .inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let mut shape = vec![batch];
                shape.extend(&inp.shape);
                (inp.name.clone(), input(&shape, i as u64 + 1))
            })
            .collect();
        let refs: Vec<(&str, ArrayD<f32>)> = inputs
            .iter()
            .map(|(n, x)| (n.as_str(), x.clone()))
            .collect();
        let prims = netc::lower::lower(&spec.graph, batch);
        let want = netc::reference::run::<f32>(&prims, &params, &refs).unwrap();
        let mut exe = compile(
            &spec,
            &params,
            CompileOptions {
                batch,
                threads: 2,
                memory_limit: None,
            },
        )
        .unwrap();
        let feed: Vec<(&str, &ArrayD<f32>)> = inputs.iter().map(|(n, x)| (n.as_str(), x)).collect();
        let got = exe.run(&feed).unwrap();
        for ((oname, g), w) in got.iter().zip(&want) {
            let e = rel_err(g, w);
            assert!(e <= 1e-4, "{name} output {oname}: relative error {e:e}");
        }
        // Running twice gives the same result (the arena is reused correctly).
        let again = exe.run(&feed).unwrap();
        assert_eq!(again[0].1, got[0].1, "{name}: second run differs");
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let spec = load_file("specs/lenet5.net", &Options::default()).unwrap();
    let w = Weights::init(&spec.graph, 0);
    let mut exe = compile(
        &spec,
        &params_f32(&w),
        CompileOptions {
            batch: 2,
            threads: 2,
            memory_limit: None,
        },
    )
    .unwrap();
    let wrong = ArrayD::<f32>::zeros(IxDyn(&[2, 1, 27, 28]));
    let e = exe.run(&[("image", &wrong)]).unwrap_err();
    assert!(
        e.contains("shape [2, 1, 27, 28]") && e.contains("[2, 1, 28, 28]"),
        "{e}"
    );
    let e = exe.run(&[("picture", &wrong)]).unwrap_err();
    assert!(e.contains("missing input `image`"), "{e}");
}
