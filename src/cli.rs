//! The `netc` command line: a thin layer over the library.
//!
//! In: arguments. Out: text on stdout, diagnostics on stderr, and the exit code: 0 ok, 1 the
//! spec (or another input) has an error, 2 the command line itself is wrong.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::show;
use crate::spec::{Options, Spec, load_file};

/// Prints a command's error on stderr and gives exit code 1 (bad input): `error: <msg>`, with
/// control characters escaped (messages of the io and data layers carry the prefix already).
pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    let msg = crate::diag::escape_controls(&msg.to_string()).into_owned();
    let msg = msg.trim_end();
    if msg.starts_with("error") {
        eprintln!("{msg}");
    } else {
        eprintln!("error: {msg}");
    }
    ExitCode::from(1)
}

#[derive(Parser, Debug)]
#[command(
    name = "netc",
    version,
    about = "A compiler for declarative neural-network specs",
    long_about = "netc checks a network described in the .net language (or YAML), shows its layers, and (in later stages) compiles, runs and trains it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Built once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse, elaborate and shape-check specs; errors point at file:line:col.
    Check {
        /// Spec files (.net, .yaml, .yml).
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Per-layer table: path, op, output shape, parameters, FLOPs; then totals.
    Summary {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the graph of a spec at a pipeline stage.
    Graph {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Pipeline stage to stop at.
        #[arg(long, value_enum, default_value_t = Stage::Layers)]
        stage: Stage,
        /// Batch size for the `prims` and `fused` stages.
        #[arg(long, default_value_t = 1, value_parser = crate::cli_values::batch)]
        batch: usize,
        /// The training graph (training-mode forward, the loss, the backward pass) instead of
        /// the inference graph, for the `prims` and `fused` stages.
        #[arg(long)]
        train: bool,
    },
    /// Run a model on an input (.npy or PNG/JPEG): print its top-5 classes (classifier
    /// outputs) or its values; write its outputs as arrays or as a picture of feature maps.
    Run {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Weights as safetensors (torchvision state_dicts load directly); seeded random
        /// initialization when absent.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The input: `PATH`, or `NAME=PATH` for models with several inputs (repeatable).
        #[arg(long, required = true)]
        input: Vec<String>,
        /// Write every output: `.npy` for one output, `.npz` (one array per output name) for
        /// several. Arrays only: a picture is `--output-image`.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Draw every channel of every feature-map output ([C, H, W]), each min-max normalized
        /// to gray, as a labelled grid in this PNG (label: the channel; `sample:channel` for
        /// batches).
        #[arg(long, value_name = "FILE.png")]
        output_image: Option<PathBuf>,
        /// Take this layer's value as the output (its path as `netc summary` prints it, e.g.
        /// `conv1` or `layer1.0.conv2`): the model runs up to it.
        #[arg(long, value_name = "PATH")]
        layer: Option<String>,
        /// With `--output-image`: draw a 3-channel output as one colour image per sample (min-max
        /// over its three channels together) instead of three gray tiles.
        #[arg(long, requires = "output_image")]
        rgb: bool,
        /// Each image input takes the height and width of the file it is given (an image's
        /// size, or a .npy's last two dimensions) instead of the spec's, and every layer is
        /// shape-checked at that size: a convolutional model (e.g. specs/edge_detect.net) runs on
        /// a photograph at its own size, without resizing or cropping.
        #[arg(long)]
        native_size: bool,
        /// Run a classifier trained on crops over the whole (larger) input as one
        /// convolutional pass: its dense layers become convolutions with the same weights, and
        /// each output becomes a map of class scores, one per window position. Prints the
        /// window, the stride and each window's top class; `--output` writes the map
        /// [N, classes, rows, cols], `--output-image` a heat map per class.
        #[arg(long, conflicts_with_all = ["layer", "native_size", "rgb"])]
        sliding: bool,
        /// With `--sliding`: the input's size as HxW or N (the image is resized and cropped to
        /// it); default: the input file's own size.
        #[arg(long, value_name = "HxW", requires = "sliding", value_parser = crate::cli_sliding::parse_size)]
        size: Option<[usize; 2]>,
        #[arg(long, default_value_t = default_threads(), value_parser = crate::cli_values::threads)]
        threads: usize,
        /// Seed for the initialization when no weights are given.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The most memory to use, e.g. `8G`, `512M` (default: the memory available, from
        /// /proc/meminfo or the cgroup's limit); a model estimated to need more is refused
        /// before anything is allocated.
        #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
        memory_limit: Option<u64>,
    },
    /// Measure compile time, latency, throughput and memory.
    Bench {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 1, value_parser = crate::cli_values::batch)]
        batch: usize,
        #[arg(long, default_value_t = default_threads(), value_parser = crate::cli_values::threads)]
        threads: usize,
        /// Timed runs (training steps with `--train`; `--steps` is the same).
        #[arg(long, alias = "steps", default_value_t = 20, value_parser = crate::cli_values::iters)]
        iters: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3, value_parser = crate::cli_values::warmup)]
        warmup: usize,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also print a table of kernels by time (name, ops, shape, share, GFLOP/s, GB/s).
        #[arg(long)]
        profile: bool,
        /// Write the whole report with the per-kernel profile as JSON to this file (for
        /// tools); implies `--profile`.
        #[arg(long, value_name = "FILE")]
        profile_json: Option<PathBuf>,
        /// Time the training step (forward, cross-entropy, backward, SGD update) instead of
        /// inference.
        #[arg(long)]
        train: bool,
        /// Time a classifier's sliding-window pass over a `--size` input (`netc run
        /// --sliding`) against running it window by window and on all windows as one batch.
        #[arg(long, requires = "size", conflicts_with_all = ["train", "profile", "profile_json"])]
        sliding: bool,
        /// With `--sliding`: the input's size, HxW or N.
        #[arg(long, value_name = "HxW", requires = "sliding", value_parser = crate::cli_sliding::parse_size)]
        size: Option<[usize; 2]>,
        /// The most memory to use, e.g. `8G`, `512M` (default: the memory available, from
        /// /proc/meminfo or the cgroup's limit); a model estimated to need more is refused
        /// before anything is allocated.
        #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
        memory_limit: Option<u64>,
    },
    /// Train a model (defaults from the spec's `train { }` section) on a dataset, with
    /// validation each epoch, checkpoints, curves and a JSON line of final metrics.
    Train {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_train::TrainArgs,
    },
    /// Write a PNG grid of training samples as the spec's augmentations (or --augment) change
    /// them: each sample, then its augmented versions epoch by epoch.
    Augment {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_augment::AugmentArgs,
    },
    /// Write a layer's activations for a dataset (with the labels) to an .npz, for use
    /// outside netc or as training data of a spec with a vector input.
    Features {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_features::FeaturesArgs,
    },
    /// Embeddings of images from a verification model (triplet, contrastive, siamese): the
    /// value its embedding network gives the first input, as an [N, D] .npy.
    Embed {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_verify::EmbedArgs,
    },
    /// Whether two images show the same identity: the distance of their embeddings (or the
    /// learned similarity) against the threshold chosen at training time.
    Verify {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_verify::VerifyArgs,
    },
    /// Detect objects with a YOLO model: boxes with class and score for images (printed, as
    /// JSON, drawn), or mAP@0.5 over a detection dataset (--data).
    Detect {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_detect::DetectArgs,
    },
    /// Anchor boxes for a YOLO spec by k-means on IoU distance over a dataset's boxes, in
    /// pixels of the spec's input.
    Anchors {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        args: crate::cli_detect::AnchorsArgs,
    },
    /// Make datasets: `netc data detection --output DIR` writes a synthetic detection set in
    /// the YOLO format.
    Data {
        #[command(subcommand)]
        what: crate::cli_data::DataCommand,
    },
    /// Compile a model and show each kernel's generated code and compile time.
    Compile {
        spec: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Print each kernel's Cranelift IR or machine code.
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        #[arg(long, default_value_t = 1, value_parser = crate::cli_values::batch)]
        batch: usize,
        /// Compile the training step (as `netc bench --train` times it: forward in training
        /// mode, cross-entropy, backward) instead of inference
        #[arg(long)]
        train: bool,
        /// The most memory to use, e.g. `8G`, `512M` (default: the memory available, from
        /// /proc/meminfo or the cgroup's limit); a model estimated to need more is refused
        /// before anything is allocated.
        #[arg(long, value_name = "SIZE", value_parser = crate::budget::parse_size)]
        memory_limit: Option<u64>,
    },
}

pub(crate) fn default_threads() -> usize {
    crate::runtime::pool::default_threads()
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    Clif,
    Asm,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Override a model parameter, e.g. `--set classes=10 --set size=32`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// The model to use when a file defines several.
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Dot,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The elaborated layer graph: blocks instantiated, shapes and parameter names resolved
    /// (also `elab`).
    #[value(alias = "elab")]
    Layers,
    /// The primitive ops every layer lowers to (batch dimension included; also `lowered`).
    #[value(alias = "lowered")]
    Prims,
    /// The fused kernels: one line per kernel with its ops, shapes and buffers.
    Fused,
}

fn options(m: &ModelArgs) -> Result<Options, String> {
    let mut o = Options::with_sets(&m.sets)?;
    o.model = m.model.clone();
    Ok(o)
}

/// Loads a spec, printing its diagnostics on failure.
fn load(path: &PathBuf, m: &ModelArgs) -> Result<Spec, ExitCode> {
    let opts = match options(m) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {}", crate::diag::escape_controls(&e.to_string()));
            return Err(ExitCode::from(2));
        }
    };
    load_file(path, &opts).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(1)
    })
}

/// The spec again with each image input at the size of the file `--input` gives it
/// (`netc run --native-size`); a layer that does not fit that size is reported with a note.
fn native_spec(
    path: &PathBuf,
    m: &ModelArgs,
    spec: &Spec,
    inputs: &[String],
) -> Result<Spec, ExitCode> {
    let sizes = crate::cli_run::native_sizes(spec, inputs).map_err(|(e, code)| {
        eprintln!("{}", crate::diag::escape_controls(&e));
        ExitCode::from(code)
    })?;
    let mut opts = options(m).map_err(|_| ExitCode::from(2))?;
    opts.input_sizes = sizes.clone();
    load_file(path, &opts).map_err(|e| {
        eprint!("{e}");
        for (name, [h, w]) in &sizes {
            eprintln!("note: with --native-size, input `{name}` is {h}×{w} (its file's size)");
        }
        ExitCode::from(1)
    })
}

fn out(s: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`netc graph x | head`) is not an error worth a panic.
    let _ = stdout.write_all(s.as_bytes());
    let _ = stdout.flush();
    ExitCode::SUCCESS
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { specs, model } => {
            let mut failed = false;
            for path in &specs {
                match load(path, &model) {
                    Ok(s) => println!(
                        "ok: {} (model {}, {} parameters, {} layers)",
                        crate::diag::escape_controls(&path.display().to_string()),
                        s.graph.name,
                        show::thousands(s.graph.num_parameters() as u64),
                        s.graph.nodes.len()
                    ),
                    Err(code) if code == ExitCode::from(2) => return code,
                    Err(_) => failed = true,
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Summary { spec, model, json } => match load(&spec, &model) {
            Ok(s) if json => out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&show::summary_json(&s.graph)).unwrap_or_default()
            )),
            Ok(s) => out(&show::summary(&s.graph)),
            Err(c) => c,
        },
        Command::Graph {
            spec,
            model,
            stage: stage @ (Stage::Prims | Stage::Fused),
            batch,
            train,
            format,
        } => match load(&spec, &model) {
            Ok(s) => {
                if let Err(e) = crate::budget::check_sizes(&s.graph, batch.max(1)) {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
                let (prims, fused) = if train {
                    match crate::model::train_stages(&s, batch.max(1)) {
                        Ok(x) => x,
                        Err(e) => {
                            eprintln!("error: {}", crate::diag::escape_controls(&e.to_string()));
                            return ExitCode::from(1);
                        }
                    }
                } else {
                    crate::model::stages(&s, batch.max(1))
                };
                let json = |v: serde_json::Value| {
                    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
                };
                out(&match (stage, format) {
                    (Stage::Prims, Format::Text) => crate::graph::graph_text(&prims),
                    (Stage::Prims, Format::Dot) => crate::graph::graph_dot(&prims),
                    (Stage::Prims, Format::Json) => json(crate::graph::graph_json(&prims)),
                    (_, Format::Text) => crate::fuse::fused_text(&fused),
                    (_, Format::Dot) => crate::fuse::fused_dot(&fused),
                    (_, Format::Json) => json(crate::fuse::fused_json(&fused)),
                })
            }
            Err(c) => c,
        },
        Command::Run {
            spec,
            model,
            weights,
            input,
            output,
            output_image,
            layer,
            rgb,
            native_size,
            sliding,
            size,
            threads,
            seed,
            memory_limit,
        } => {
            let s = match load(&spec, &model) {
                Ok(s) => s,
                Err(c) => return c,
            };
            let s = if native_size {
                match native_spec(&spec, &model, &s, &input) {
                    Ok(s) => s,
                    Err(c) => return c,
                }
            } else {
                s
            };
            let args = crate::cli_run::RunArgs {
                weights: weights.as_deref(),
                inputs: &input,
                output: output.as_deref(),
                output_image: output_image.as_deref(),
                layer: layer.as_deref(),
                rgb,
                threads,
                seed,
                memory_limit,
            };
            if sliding {
                return crate::cli_sliding::run(&s, &args, size);
            }
            crate::cli_run::run(&s, &args)
        }
        Command::Bench {
            spec,
            model,
            batch,
            threads,
            iters,
            warmup,
            json,
            profile,
            profile_json,
            train,
            sliding,
            size,
            memory_limit,
        } => match options(&model) {
            Ok(_) if sliding => match (load(&spec, &model), size) {
                (Ok(s), Some(size)) => crate::cli_sliding::bench(
                    &s,
                    &crate::cli_sliding::BenchSliding {
                        size,
                        threads,
                        iters,
                        warmup,
                        json,
                        memory_limit,
                    },
                ),
                (Err(c), _) => c,
                (Ok(_), None) => {
                    eprintln!("error: --sliding needs --size HxW, the input's size");
                    ExitCode::from(2)
                }
            },
            Ok(o) if train => ExitCode::from(crate::train::bench::cli(
                &spec,
                &o,
                &crate::train::bench::TrainBenchOptions {
                    batch: batch.max(1),
                    threads,
                    steps: iters,
                    warmup,
                    profile: profile || profile_json.is_some(),
                    seed: 0,
                    memory_limit,
                },
                json,
                profile_json.as_deref(),
            )),
            Ok(o) => crate::cli_run::bench(
                &spec,
                &o,
                crate::cli_run::BenchRun {
                    batch: batch.max(1),
                    threads,
                    iters,
                    warmup,
                    json,
                    profile: profile || profile_json.is_some(),
                    profile_json: profile_json.as_deref(),
                    memory_limit,
                },
            ),
            Err(e) => {
                eprintln!("error: {}", crate::diag::escape_controls(&e.to_string()));
                ExitCode::from(2)
            }
        },
        Command::Features { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_features::features(&s, &args),
            Err(c) => c,
        },
        Command::Train { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_train::train(&s, &args),
            Err(c) => c,
        },
        Command::Augment { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_augment::augment_cmd(&s, &args),
            Err(c) => c,
        },
        Command::Embed { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_verify::embed_cmd(&s, &args),
            Err(c) => c,
        },
        Command::Verify { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_verify::verify_cmd(&s, &args),
            Err(c) => c,
        },
        Command::Detect { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_detect::detect_cmd(&s, &args),
            Err(c) => c,
        },
        Command::Anchors { spec, model, args } => match load(&spec, &model) {
            Ok(s) => crate::cli_detect::anchors_cmd(&s, &args),
            Err(c) => c,
        },
        Command::Data { what } => crate::cli_data::data_cmd(&what),
        Command::Compile {
            spec,
            model,
            emit,
            batch,
            train,
            memory_limit,
        } => match load(&spec, &model) {
            Ok(s) => crate::cli_run::compile_cmd(
                &s,
                batch.max(1),
                emit.map(|e| match e {
                    Emit::Clif => "clif",
                    Emit::Asm => "asm",
                }),
                train,
                memory_limit,
            ),
            Err(c) => c,
        },
        Command::Graph {
            stage: Stage::Layers,
            train: true,
            ..
        } => {
            eprintln!(
                "error: --train shows the training graph at --stage prims or --stage fused; the \
                 layer graph (--stage layers) is the same for training"
            );
            ExitCode::from(2)
        }
        Command::Graph {
            spec,
            model,
            format,
            stage: Stage::Layers,
            ..
        } => match load(&spec, &model) {
            Ok(s) => out(&match format {
                Format::Text => show::graph_text(&s.graph),
                Format::Dot => show::graph_dot(&s.graph),
                Format::Json => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&show::graph_json(&s.graph)).unwrap_or_default()
                ),
            }),
            Err(c) => c,
        },
    }
}
