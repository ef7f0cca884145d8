//! Show how a spec compiles: the fused kernels (which primitive ops each kernel computes, its
//! input and output buffers) and the compile statistics (kernels, generated functions,
//! codegen time, arena and constant sizes).
//!
//! Run: `cargo run --example fused_graph -- [SPEC] [BATCH] [--set NAME=VALUE ...]`
//!
//! `SPEC` defaults to `specs/mini_resnet.net` and `BATCH` to 1; weights are seeded (the
//! structure of the compiled program does not depend on their values).

use netc::io::weights::Weights;
use netc::model::{CompileOptions, compile, params_f32, stages};
use netc::runtime::CompileStats;
use netc::{Options, Spec, load_file};

/// The fused program of `spec` at `batch`, as text.
fn fused_kernels(spec: &Spec, batch: usize) -> String {
    let (prims, fused) = stages(spec, batch);
    format!(
        "{} primitive ops -> {} kernels\n{}",
        prims.nodes.len(),
        fused.kernels.len(),
        netc::fuse::fused_text(&fused)
    )
}

/// Compiles `spec` at `batch` with seeded weights and returns the statistics.
fn compile_stats(spec: &Spec, batch: usize) -> Result<CompileStats, String> {
    let w = Weights::init(&spec.graph, 0);
    let opts = CompileOptions {
        batch,
        ..CompileOptions::default()
    };
    Ok(compile(spec, &params_f32(&w), opts)?.stats)
}

fn show_stats(s: &CompileStats) -> String {
    let kib = |b: usize| b as f64 / 1024.0;
    format!(
        "kernels: {}\ngenerated functions: {}\ncodegen time: {:.1} ms\n\
         arena: {:.1} KiB ({:.1} KiB without reuse)\nconstants: {:.1} KiB\n",
        s.kernels,
        s.functions,
        s.codegen_time.as_secs_f64() * 1e3,
        kib(s.arena_bytes),
        kib(s.unshared_bytes),
        kib(s.const_bytes)
    )
}

fn main() {
    let mut positional = Vec::new();
    let mut sets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--set" {
            sets.extend(args.next());
        } else {
            positional.push(a);
        }
    }
    let path = positional.first().cloned().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/specs/mini_resnet.net").to_string()
    });
    let batch = match positional.get(1).map(|b| b.parse::<usize>()) {
        None => 1,
        Some(Ok(b)) if b > 0 => b,
        Some(_) => {
            eprintln!("BATCH must be a positive integer");
            std::process::exit(2);
        }
    };
    let spec = Options::with_sets(&sets)
        .map_err(|e| e.to_string())
        .and_then(|opts| load_file(&path, &opts).map_err(|e| e.to_string()));
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            std::process::exit(1);
        }
    };
    print!("{}", fused_kernels(&spec, batch));
    match compile_stats(&spec, batch) {
        Ok(stats) => print!("\n{}", show_stats(&stats)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
