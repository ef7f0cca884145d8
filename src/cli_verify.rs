//! The face-verification commands of the CLI: `embed` and `verify`.
//!
//! In: a loaded verification spec (triplet, contrastive or learned-similarity; see
//! [`crate::verify::embedding_node`]), its weights (a weights file or a training checkpoint)
//! and images (PNG/JPEG, loaded, resized and normalized as the model's first input says, as
//! `netc run` does; or `.npy` `[C, H, W]` / `[N, C, H, W]`). Out:
//!
//! - `netc embed`: the embeddings of the images, an `.npy` of `[N, D]` f32 (written
//!   atomically), computed by the model cut after the embedding of its first input
//!   ([`crate::cut::prefix`]), in inference mode, in batches of at most [`EMBED_BATCH`];
//! - `netc verify`: for two images, the distance between their embeddings (`pairwise_distance`,
//!   as the triplet loss measures it) or, for a learned similarity, the sigmoid of the model's
//!   logit, and `same` or `different` by the threshold stored in the checkpoint at training
//!   time ([`crate::train::checkpoint::Progress::threshold`]) or given with `--threshold`.
//!
//! Exit codes as every command: 0 ok, 1 bad input (spec, weights, image, a model that is not a
//! verification model), 2 usage (no threshold anywhere).

use crate::cli::fail;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::io::weights::Weights;
use crate::layer_graph::{InputInfo, LayerGraph};
use crate::model::{CompileOptions, compile, params_f32};
use crate::spec::Spec;
use crate::verify::{ScoreKind, embedding_node, pairwise_distance, score_kind};

/// The most images `netc embed` runs at once.
pub const EMBED_BATCH: usize = 64;

fn show(path: &Path) -> String {
    crate::diag::escape_controls(&path.display().to_string()).into_owned()
}

/// `netc embed`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedArgs {
    /// The trained weights: a checkpoint or a safetensors weights file.
    #[arg(long)]
    pub weights: PathBuf,
    /// Images (PNG/JPEG) or .npy arrays ([C, H, W] or [N, C, H, W]); one row each in order.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Where to write the [N, D] embeddings (.npy).
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = crate::cli::default_threads(), value_parser = crate::cli_values::threads)]
    pub threads: usize,
    /// The most memory to use, e.g. `8G`, `512M`.
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_limit: Option<u64>,
}

/// `netc verify`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The two images to compare (PNG/JPEG or .npy).
    #[arg(num_args = 2, required = true, value_names = ["A", "B"])]
    pub images: Vec<PathBuf>,
    /// The trained weights: a checkpoint (which stores the threshold chosen in training) or a
    /// safetensors weights file (then give --threshold).
    #[arg(long)]
    pub weights: PathBuf,
    /// The decision threshold, instead of the checkpoint's: a distance (same when at most T)
    /// or, for a learned similarity, a probability (same when at least T).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    #[arg(long, default_value_t = crate::cli::default_threads(), value_parser = crate::cli_values::threads)]
    pub threads: usize,
    /// The most memory to use, e.g. `8G`, `512M`.
    #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
    pub memory_limit: Option<u64>,
}

/// `netc embed` from its flags.
pub fn embed_cmd(spec: &Spec, a: &EmbedArgs) -> ExitCode {
    let opts = RunOptions {
        threads: a.threads,
        memory_limit: a.memory_limit,
    };
    embed(spec, &a.weights, &a.input, &a.output, opts)
}

/// `netc verify` from its arguments.
pub fn verify_cmd(spec: &Spec, a: &VerifyArgs) -> ExitCode {
    let opts = RunOptions {
        threads: a.threads,
        memory_limit: a.memory_limit,
    };
    match a.images.as_slice() {
        [x, y] => verify(spec, &a.weights, [x, y], a.threshold, opts),
        other => {
            eprintln!("error: verify compares two images, {} given", other.len());
            ExitCode::from(2)
        }
    }
}

/// How `embed` and `verify` run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub threads: usize,
    pub memory_limit: Option<u64>,
}

/// Reads one image or `.npy` for `input`, as `[N, ...input shape]`.
fn read_images(path: &Path, input: &InputInfo) -> Result<ArrayD<f32>, String> {
    let is_npy = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let x = if is_npy {
        crate::io::npy::read_f32(path).map_err(|e| e.to_string())?
    } else {
        crate::io::image::load_image(path, input).map_err(|e| e.to_string())?
    };
    let want = &input.shape;
    if x.shape() == want.as_slice() {
        return Ok(x.insert_axis(Axis(0)));
    }
    if x.ndim() == want.len() + 1 && &x.shape()[1..] == want.as_slice() && x.shape()[0] > 0 {
        return Ok(x);
    }
    Err(format!(
        "{}: shape {} does not fit the model's input `{}` {} (give {} or [N, {}])",
        show(path),
        crate::io::show_shape(x.shape()),
        input.name,
        crate::io::show_shape(want),
        crate::io::show_shape(want),
        want.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The model cut after the embedding of its first input, with the output `embedding`.
fn embedding_graph(lg: &LayerGraph) -> Result<LayerGraph, String> {
    let node = embedding_node(lg)?;
    crate::cut::prefix(lg, &[("embedding".to_string(), node)])
}

/// Compiles `lg` (a graph of `spec`'s parameters) for `batch`.
fn compile_graph(
    spec: &Spec,
    lg: LayerGraph,
    weights: &Weights,
    batch: usize,
    opts: RunOptions,
) -> Result<crate::runtime::Executable, String> {
    crate::budget::check_inference(&lg, batch, opts.threads, opts.memory_limit)?;
    let sub = Spec {
        sources: spec.sources.clone(),
        graph: lg,
    };
    compile(
        &sub,
        &params_f32(weights),
        CompileOptions {
            batch,
            threads: opts.threads,
            memory_limit: opts.memory_limit,
        },
    )
}

/// The embeddings of `images` (`[N, ...]`), `[N, D]`, in batches of at most [`EMBED_BATCH`]
/// (the last one padded with zeros, whose rows are dropped: inference treats samples
/// independently).
fn embed_all(
    spec: &Spec,
    weights: &Weights,
    images: &ArrayD<f32>,
    opts: RunOptions,
) -> Result<ArrayD<f32>, String> {
    let lg = embedding_graph(&spec.graph)?;
    let input = lg.inputs[0].name.clone();
    let dim: usize = lg.nodes[lg.outputs[0].1].shape.iter().product();
    let n = images.shape()[0];
    let batch = n.clamp(1, EMBED_BATCH);
    let mut exe = compile_graph(spec, lg, weights, batch, opts)?;
    let mut out = Vec::with_capacity(n * dim);
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let mut chunk = images.slice_axis(Axis(0), (start..end).into()).to_owned();
        if end - start < batch {
            let mut shape = chunk.shape().to_vec();
            shape[0] = batch - (end - start);
            chunk
                .append(Axis(0), ArrayD::zeros(IxDyn(&shape)).view())
                .map_err(|e| e.to_string())?;
        }
        let y = exe.run(&[(input.as_str(), &chunk)])?;
        let y = &y[0].1;
        out.extend(y.iter().take((end - start) * dim));
        start = end;
    }
    ArrayD::from_shape_vec(IxDyn(&[n, dim]), out).map_err(|e| e.to_string())
}

/// Loads the weights (a weights file or a checkpoint) and the threshold a checkpoint stores.
fn load_weights(spec: &Spec, path: &Path) -> Result<(Weights, Option<f64>), String> {
    let ck = crate::train::checkpoint::load(path, &spec.graph).map_err(|e| e.to_string())?;
    let threshold = ck.progress.and_then(|p| p.threshold);
    Ok((ck.weights, threshold))
}

/// `netc embed SPEC --weights W --input a.png [b.png ...] --output emb.npy`
pub fn embed(
    spec: &Spec,
    weights: &Path,
    inputs: &[PathBuf],
    output: &Path,
    opts: RunOptions,
) -> ExitCode {
    // The model must be a verification model before anything is read.
    let lg = match embedding_graph(&spec.graph) {
        Ok(lg) => lg,
        Err(e) => return fail(e),
    };
    let info = lg.inputs[0].clone();
    let mut parts = Vec::with_capacity(inputs.len());
    for p in inputs {
        match read_images(p, &info) {
            Ok(x) => parts.push(x),
            Err(e) => return fail(e),
        }
    }
    let views: Vec<_> = parts.iter().map(|x| x.view()).collect();
    let images = match ndarray::concatenate(Axis(0), &views) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let (w, _) = match load_weights(spec, weights) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let emb = match embed_all(spec, &w, &images, opts) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::io::npy::write_f32(output, &emb) {
        return fail(e);
    }
    println!(
        "wrote {} ({} embeddings of {} values, of input `{}`)",
        show(output),
        emb.shape()[0],
        emb.shape()[1],
        info.name
    );
    ExitCode::SUCCESS
}

/// `netc verify SPEC --weights W a.png b.png [--threshold T]`
pub fn verify(
    spec: &Spec,
    weights: &Path,
    images: [&Path; 2],
    threshold: Option<f64>,
    opts: RunOptions,
) -> ExitCode {
    let kind = match score_kind(&spec.graph) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    if let Some(t) = threshold
        && !t.is_finite()
    {
        eprintln!("error: --threshold {t} is not a finite number");
        return ExitCode::from(2);
    }
    let (w, stored) = match load_weights(spec, weights) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let (threshold, source) = match (threshold, stored) {
        (Some(t), _) => (t, "--threshold"),
        (None, Some(t)) => (t, "the checkpoint"),
        (None, None) => {
            eprintln!(
                "error: {} stores no decision threshold (only checkpoints of verification \
                 training do)\n  help: pass --threshold T: {}",
                show(weights),
                match kind {
                    ScoreKind::Distance =>
                        "pairs whose embeddings are at most T apart are the same",
                    ScoreKind::Similarity =>
                        "pairs whose similarity (0 to 1) is at least T are the same",
                }
            );
            return ExitCode::from(2);
        }
    };
    let score = match kind {
        ScoreKind::Distance => distance(spec, &w, images, opts),
        ScoreKind::Similarity => similarity(spec, &w, images, opts),
    };
    let score = match score {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let same = kind.is_same(score, threshold);
    println!(
        "{}: {score:.6} (threshold {threshold} from {source}: same when {} {threshold})",
        kind.name(),
        match kind {
            ScoreKind::Distance => "≤",
            ScoreKind::Similarity => "≥",
        }
    );
    println!("{}", if same { "same" } else { "different" });
    ExitCode::SUCCESS
}

/// One image of `path` for `input`: `[1, ...]`.
fn one_image(path: &Path, input: &InputInfo) -> Result<ArrayD<f32>, String> {
    let x = read_images(path, input)?;
    if x.shape()[0] != 1 {
        return Err(format!(
            "{}: holds {} images; verify compares one image with another",
            show(path),
            x.shape()[0]
        ));
    }
    Ok(x)
}

/// The distance between the embeddings of the two images.
fn distance(spec: &Spec, w: &Weights, [a, b]: [&Path; 2], opts: RunOptions) -> Result<f64, String> {
    let info = &spec.graph.inputs[0];
    let (xa, xb) = (one_image(a, info)?, one_image(b, info)?);
    let both = ndarray::concatenate(Axis(0), &[xa.view(), xb.view()]).map_err(|e| e.to_string())?;
    let e = embed_all(spec, w, &both, opts)?;
    let rows: Vec<Vec<f32>> = e
        .outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    Ok(pairwise_distance(&rows[0], &rows[1]))
}

/// The learned similarity of the two images: the sigmoid of the model's one logit, with the
/// first image as its first input and the second as its second.
fn similarity(
    spec: &Spec,
    w: &Weights,
    [a, b]: [&Path; 2],
    opts: RunOptions,
) -> Result<f64, String> {
    let g = &spec.graph;
    let (ia, ib) = (&g.inputs[0], &g.inputs[1]);
    let (xa, xb) = (one_image(a, ia)?, one_image(b, ib)?);
    let mut lg = g.clone();
    lg.outputs.truncate(1);
    let mut exe = compile_graph(spec, lg, w, 1, opts)?;
    let y = exe.run(&[(ia.name.as_str(), &xa), (ib.name.as_str(), &xb)])?;
    let logit = y[0].1.iter().next().copied().unwrap_or(f32::NAN) as f64;
    if !logit.is_finite() {
        return Err(format!(
            "the model's logit is {logit}; the weights give no usable similarity"
        ));
    }
    Ok(1.0 / (1.0 + (-logit).exp()))
}
