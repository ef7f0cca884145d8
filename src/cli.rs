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
    },
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
    /// The elaborated layer graph: blocks instantiated, shapes and parameter names resolved.
    Layers,
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
            eprintln!("error: {e}");
            return Err(ExitCode::from(2));
        }
    };
    load_file(path, &opts).map_err(|e| {
        eprint!("{e}");
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
                        path.display(),
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
            format,
            stage: Stage::Layers,
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
