//! The memory budget through the library: the estimate against what compiling and training
//! allocate, and `compile`, `Trainer` and `Executable` refusing what exceeds their limit.

use std::path::Path;

use netc::budget::{check_inference, check_training_step};
use netc::io::weights::Weights;
use netc::model::{CompileOptions, compile, params_f32};
use netc::train::Trainer;
use netc::train_config::{Loss, Optimizer};
use netc::{Options, load_file};

fn spec(path: &str, sets: &[&str]) -> netc::Spec {
    load_file(Path::new(path), &Options::with_sets(sets).unwrap()).unwrap()
}

fn sgd() -> Optimizer {
    Optimizer::Sgd {
        lr: 0.01,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    }
}

const CE: Loss = Loss::CrossEntropy {
    label_smoothing: 0.0,
};

/// The estimate never falls below what was measurably allocated (the arena, the executable's
/// constants, the caller's parameters) and stays within 3× of it (the rest is the copies made
/// while compiling, the inputs and outputs, and scratch).
#[test]
fn inference_estimate_is_within_3x_of_arena_constants_and_parameters() {
    for (path, batch) in [
        ("specs/lenet5.net", 1),
        ("specs/lenet5.net", 64),
        ("specs/mini_resnet.net", 8),
    ] {
        let s = spec(path, &[]);
        let est = check_inference(&s.graph, batch, 2, None).unwrap().total();
        let params = params_f32(&Weights::init(&s.graph, 0));
        let param_bytes: usize = params.iter().map(|p| p.len() * 4).sum();
        let opts = CompileOptions {
            batch,
            threads: 2,
            memory_limit: None,
        };
        let st = compile(&s, &params, opts).unwrap().stats;
        let measured = (st.arena_bytes + st.const_bytes + param_bytes) as u64;
        assert!(
            measured <= est && est <= 3 * measured,
            "{path} batch {batch}: estimate {est}, measured {measured}"
        );
    }
}

/// The same for a training step: the step's arena, the executable's parameters and constants,
/// the optimizer state and the caller's weights.
#[test]
fn training_estimate_is_within_3x_of_what_the_trainer_holds() {
    let s = spec("specs/lenet5.net", &[]);
    let est = check_training_step(&s.graph, 32, 2, &CE.into(), &sgd(), None)
        .unwrap()
        .total();
    let w = Weights::init(&s.graph, 0);
    let weight_bytes: usize = params_f32(&w).iter().map(|p| p.len() * 4).sum();
    let mut tr = Trainer::new(&s.graph, w, 32, CE, sgd(), 2).unwrap();
    let optim: usize = tr
        .optim
        .m
        .iter()
        .chain(&tr.optim.v)
        .map(|v| v.len() * 4)
        .sum();
    let exe = tr.executable();
    let held: usize = exe.params().iter().map(|(_, p)| p.len() * 4).sum();
    let st = &exe.stats;
    let measured = (st.arena_bytes + st.const_bytes + held + optim + weight_bytes) as u64;
    assert!(
        measured <= est && est <= 3 * measured,
        "estimate {est}, measured {measured}"
    );
}

#[test]
fn compile_and_trainer_refuse_beyond_their_limit() {
    let s = spec("specs/lenet5.net", &[]);
    let params = params_f32(&Weights::init(&s.graph, 0));
    let opts = CompileOptions {
        batch: 1,
        threads: 1,
        memory_limit: Some(300 << 10),
    };
    let e = compile(&s, &params, opts).err().expect("refused");
    assert!(e.contains("more than the memory limit, 300.0 KiB"), "{e}");
    assert!(e.contains("constant fc1 [120, 400]"), "{e}");
    let w = Weights::init(&s.graph, 0);
    let e = Trainer::with_limit(&s.graph, w, 1, CE, sgd(), 1, Some(300 << 10))
        .err()
        .expect("refused");
    assert!(e.contains("more than the memory limit"), "{e}");
    assert!(e.contains("fc1.weight [120, 400] (optimizer state)"), "{e}");
    // By default the limit is the memory available: a model of 2^31 classes is refused
    // before lowering, whatever parameter values the caller passes.
    let huge = spec("specs/lenet5.net", &["classes=2147483647"]);
    let e = compile(&huge, &[], CompileOptions::default())
        .err()
        .expect("refused");
    assert!(e.contains("fc3.weight [2147483647, 84]"), "{e}");
    assert!(e.contains("more than the memory available"), "{e}");
}
