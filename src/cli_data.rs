//! `netc data`: make datasets.
//!
//! In: the subcommand's arguments (`netc data detection --output DIR ...`). Out: the dataset
//! written to disk ([`crate::data::yolo::write`]: never half-written), one line on stdout saying
//! what was written, and the exit code: 0 ok, 1 the data could not be made or written, 2 a
//! bad argument.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Subcommand, ValueEnum};

use crate::data::synth_detection::{self, Background, SynthConfig};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Compose a detection dataset from the bundled Fashion-MNIST (objects at random positions
    /// and scales, some overlapping) and write it as a YOLO folder: train/ and test/ of PNGs
    /// with a .txt of `class cx cy w h` lines beside each, and classes.txt.
    Detection(DetectionArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundArg {
    Plain,
    Noise,
}

#[derive(clap::Args, Debug)]
pub struct DetectionArgs {
    /// The directory to write (created; refused if it exists and is not empty, unless
    /// --force).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Image side in pixels (square images).
    #[arg(long, default_value_t = 96)]
    pub size: usize,
    /// Training images.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    /// Test images.
    #[arg(long, default_value_t = 400)]
    pub test: usize,
    /// Objects per image: `MIN..MAX` (inclusive) or one number.
    #[arg(long, default_value = "1..4", value_parser = objects_range)]
    pub objects: (usize, usize),
    #[arg(long, value_enum, default_value_t = BackgroundArg::Plain)]
    pub background: BackgroundArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace DIR if it is a detection folder netc wrote (classes.txt, train/, test/).
    #[arg(long)]
    pub force: bool,
}

/// `1..4` → (1, 4); `3` → (3, 3).
fn objects_range(s: &str) -> Result<(usize, usize), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{t}` is not a number of objects; write e.g. `1..4` or `2`"))
    };
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b.strip_prefix('=').unwrap_or(b))?),
        None => {
            let n = parse(s)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(format!("{lo}..{hi} is empty: give MIN..MAX with MIN ≤ MAX"));
    }
    if hi > synth_detection::MAX_OBJECTS {
        return Err(format!(
            "at most {} objects per image",
            synth_detection::MAX_OBJECTS
        ));
    }
    Ok((lo, hi))
}

/// Runs `netc data ...`.
pub fn data_cmd(cmd: &DataCommand) -> ExitCode {
    match cmd {
        DataCommand::Detection(a) => detection(a),
    }
}

fn detection(a: &DetectionArgs) -> ExitCode {
    let cfg = SynthConfig {
        channels: 1,
        height: a.size,
        width: a.size,
        train: a.train,
        test: a.test,
        min_objects: a.objects.0,
        max_objects: a.objects.1,
        background: match a.background {
            BackgroundArg::Plain => Background::Plain,
            BackgroundArg::Noise => Background::Noise,
        },
        seed: a.seed,
    };
    if let Err(e) = cfg.check() {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let t = Instant::now();
    let split = match synth_detection::generate(&cfg) {
        Ok(s) => s,
        Err(e) => return crate::cli::fail(e),
    };
    let generated = t.elapsed().as_secs_f64();
    if let Err(e) = crate::data::yolo::write(&split, &a.output, a.force) {
        return crate::cli::fail(e);
    }
    let objects: usize = [&split.train, &split.test]
        .iter()
        .flat_map(|d| d.objects.iter().map(Vec::len))
        .sum();
    println!(
        "wrote {}: {} training and {} test images ({}×{}, {}–{} objects each, {} objects in \
         all), {} classes in classes.txt; generated in {:.2} s",
        crate::diag::escape_controls(&a.output.display().to_string()),
        split.train.len(),
        split.test.len(),
        a.size,
        a.size,
        cfg.min_objects,
        cfg.max_objects,
        objects,
        split.train.classes,
        generated
    );
    ExitCode::SUCCESS
}
