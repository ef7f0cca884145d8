//! Fine-tuning from Rust: start from trained weights, freeze the convolutional layers, train
//! only the classifier for one epoch with a callback that logs and can stop early.
//!
//! ```sh
//! cargo run --release --example finetune
//! ```
//!
//! For the "pretrained" weights this first trains LeNet-5 briefly; with real pretrained
//! weights you would `Weights::load` a safetensors file instead.

use netc::data::{self, Normalize};
use netc::io::weights::Weights;
use netc::train::session::{self, Event, Observer, Settings};
use netc::train_config::{Loss, Optimizer, Schedule};
use netc::{Options, load_file};

/// Prints each epoch and stops once the training accuracy passes a threshold.
struct Logger {
    stop_at: f64,
    last_accuracy: f64,
}

impl Observer for Logger {
    fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Step { accuracy, .. } => self.last_accuracy = accuracy.unwrap_or(0.0),
            Event::Epoch(r) => println!(
                "epoch {}: train loss {:.4}, test accuracy {:.2}%",
                r.epoch,
                r.train_loss,
                r.test_accuracy.unwrap_or(0.0) * 100.0
            ),
            Event::Saved(p) => println!("checkpoint: {}", p.display()),
            Event::Note(n) => println!("{n}"),
        }
    }
    fn stop_requested(&self) -> bool {
        self.last_accuracy > self.stop_at
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = load_file("specs/lenet5.net", &Options::default())?;
    let data = data::open("bundled", &spec.graph.inputs[0])?;
    let settings = Settings {
        epochs: 1,
        batch: 64,
        objective: Loss::CrossEntropy {
            label_smoothing: 0.0,
        }
        .into(),
        optimizer: Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 5e-4,
        },
        schedule: Schedule::Constant { warmup: 0 },
        seed: 1,
        threads: 2,
        augment: vec![],
        identities: None,
        mining: Default::default(),
        no_cache: false,
        normalize: Normalize::from_input(&spec.graph.inputs[0])?,
        checkpoint: None,
        max_steps: None,
        memory_limit: None,
    };

    // 1. "Pretrain" the whole network for an epoch.
    let init = Weights::init(&spec.graph, 1);
    let pre = session::run(
        &spec.graph,
        init,
        None,
        &data,
        &settings,
        &mut session::Quiet,
    )?;
    println!(
        "pretrained: test accuracy {:.2}%",
        pre.progress.history[0].test_accuracy.unwrap_or(0.0) * 100.0
    );

    // 2. Freeze the feature extractor and fine-tune the classifier only.
    let mut graph = spec.graph.clone();
    let frozen = netc::train::freeze(&mut graph, &["conv1".into(), "conv2".into()])?;
    println!("frozen: {frozen} parameter tensors");
    let mut logger = Logger {
        stop_at: 0.99,
        last_accuracy: 0.0,
    };
    let before = pre.weights.get(&graph, "conv1.weight").cloned();
    let tuned = session::run(&graph, pre.weights, None, &data, &settings, &mut logger)?;
    println!(
        "fine-tuned in {:.1} s ({} steps); the frozen conv1.weight is unchanged: {}",
        tuned.seconds,
        tuned.steps,
        tuned.weights.get(&graph, "conv1.weight") == before.as_ref()
    );
    Ok(())
}
