//! `netc features`: a layer's activations for a dataset, as an `.npz` of training data.
//!
//! In: a spec, weights, a layer (its path as `netc summary` prints it, or an output's name),
//! a data source (as `netc train --data` takes it). Out: an `.npz` written atomically, with
//! `x_train` `[N, ...]` (the layer's per-sample shape after N, float32), `y_train` `[N]` (int64
//! labels), `x_test`, `y_test` — the data's own train/test split, which `netc train --data`
//! reads back as it is (a spec with `input feat: [F]` trains on it). `--split train` or
//! `--split test` writes one part as `x` and `y` instead. Activations are computed batch by
//! batch ([`crate::features::Extractor`], the prefix up to the layer compiled for inference)
//! and streamed to the file, so memory holds one batch however large the dataset.

use crate::cli::fail;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::data::Normalize;
use crate::io::weights::Weights;
use crate::spec::Spec;

/// The flags of `netc features`.
#[derive(clap::Args, Debug, Clone)]
pub struct FeaturesArgs {
    /// Weights (safetensors); seeded random initialization when absent (with a warning).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The layer whose outputs to write: its path as `netc summary` prints it (`fc`,
    /// `layer4.1.1`, `features.12`), or an output's name.
    #[arg(long)]
    pub layer: String,
    /// The data, as `netc train --data` takes it (default: the spec's, else `bundled`).
    #[arg(long)]
    pub data: Option<String>,
    /// The .npz file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Which samples: `both` (x_train, y_train, x_test, y_test), or `train` / `test` alone
    /// (as x and y).
    #[arg(long, default_value = "both", value_parser = ["both", "train", "test"])]
    pub split: String,
    #[arg(long, default_value_t = 64, value_parser = crate::cli_values::batch)]
    pub batch: usize,
    #[arg(long, default_value_t = crate::cli::default_threads(), value_parser = crate::cli_values::threads)]
    pub threads: usize,
    /// Seed of the initialization when no weights are given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The most memory to use, e.g. `8G`, `512M` (default: the memory available).
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_limit: Option<u64>,
    /// Only errors on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `netc features`.
pub fn features(spec: &Spec, args: &FeaturesArgs) -> ExitCode {
    let lg = &spec.graph;
    let node = match crate::cut::find_node(lg, &args.layer) {
        Ok(n) => n,
        Err(e) => return fail(format!("--layer {}: {e}", args.layer)),
    };
    let weights = match &args.weights {
        Some(p) => match Weights::load(p, lg) {
            Ok(w) => w,
            Err(e) => return fail(e),
        },
        None => {
            eprintln!(
                "warning: no --weights: the activations are those of randomly initialized \
                 weights (seed {})",
                args.seed
            );
            Weights::init(lg, args.seed)
        }
    };
    let mut ex = match crate::features::Extractor::new(
        lg,
        &weights,
        node,
        args.threads,
        args.memory_limit,
    ) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let input = ex.input().clone();
    let source = args
        .data
        .clone()
        .or(lg.train.as_ref().and_then(|t| t.data.clone()))
        .unwrap_or_else(|| "bundled".to_string());
    let data = match crate::data::open(&source, &input) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let normalize = match Normalize::from_input(&input) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let parts: Vec<(&crate::data::Dataset, &str, &str)> = match args.split.as_str() {
        "train" => vec![(&data.train, "x", "y")],
        "test" => vec![(&data.test, "x", "y")],
        _ => vec![
            (&data.train, "x_train", "y_train"),
            (&data.test, "x_test", "y_test"),
        ],
    };
    let shape = ex.shape.clone();
    let per = ex.sample_len();
    // Errors inside the writer's callback: kept here, reported as they are.
    let mut failure: Option<String> = None;
    let written = crate::io::npy::write_npz(&args.output, |z| {
        for (set, xk, yk) in &parts {
            let mut xshape = vec![set.len()];
            xshape.extend(&shape);
            z.begin(xk, "<f4", &xshape)?;
            let mut labels = Vec::with_capacity(set.len());
            let mut io_err = None;
            let r = ex.run(set, &normalize, args.batch, |x, y| {
                debug_assert_eq!(x.len(), y.len() * per);
                labels.extend_from_slice(y);
                z.f32s(x).map_err(|e| {
                    let m = e.to_string();
                    io_err = Some(e);
                    m
                })
            });
            if let Some(e) = io_err {
                return Err(e);
            }
            if let Err(e) = r {
                failure = Some(e.clone());
                return Err(std::io::Error::other(e));
            }
            z.begin(yk, "<i8", &[labels.len()])?;
            z.i64s(&labels)?;
        }
        Ok(())
    });
    if let Some(e) = failure {
        return fail(e);
    }
    if let Err(e) = written {
        return fail(e);
    }
    if !args.quiet {
        let counts: Vec<String> = parts
            .iter()
            .map(|(set, xk, _)| format!("{xk} [{}, {}]", set.len(), dims(&shape)))
            .collect();
        eprintln!(
            "wrote {}: {} (layer `{}` of {} on {})",
            crate::diag::escape_controls(&args.output.display().to_string()),
            counts.join(", "),
            lg.nodes[node].path,
            lg.name,
            crate::diag::escape_controls(&source)
        );
    }
    ExitCode::SUCCESS
}

fn dims(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
