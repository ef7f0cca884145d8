//! Classify an image with a shipped model: load a spec and its PyTorch-exported reference
//! weights, compile it, run it on an image file and print the top-5 classes.
//!
//! Run: `cargo run --release --example run_image -- [IMAGE] [MODEL]`
//!
//! `MODEL` is `mini_resnet` (the default; `specs/mini_resnet.net`, a 3×16×16 RGB input) or
//! `lenet5` (`specs/lenet5.net`, 1×28×28 grayscale); the weights come from
//! `tests/data/reference/MODEL/weights.safetensors`. The image (PNG or JPEG) is resized,
//! center-cropped and normalized as the spec's input asks (`netc::io::image`). Without an
//! image argument, a test pattern is written as a PNG to a temporary directory and used.

use std::path::{Path, PathBuf};

use ndarray::Axis;
use netc::io::weights::Weights;
use netc::model::{CompileOptions, compile, params_f32};
use netc::{Options, load_file};

/// The `k` most probable classes (index, softmax probability), most probable first.
fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut ranked: Vec<(usize, f32)> = exp.iter().map(|&e| e / sum).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

/// Loads `specs/{model}.net` with its reference weights, runs it on `image` and returns the
/// top-5 classes.
fn classify(root: &Path, model: &str, image: &Path) -> Result<Vec<(usize, f32)>, String> {
    let spec = load_file(root.join(format!("specs/{model}.net")), &Options::default())
        .map_err(|e| e.to_string())?;
    let weights = Weights::load(
        root.join(format!("tests/data/reference/{model}/weights.safetensors")),
        &spec.graph,
    )
    .map_err(|e| e.to_string())?;
    let input = &spec.graph.inputs[0];
    let x = netc::io::image::load_image(image, input)
        .map_err(|e| e.to_string())?
        .insert_axis(Axis(0));
    let mut exe = compile(
        &spec,
        &params_f32(&weights),
        CompileOptions {
            batch: 1,
            ..CompileOptions::default()
        },
    )?;
    let out = exe.run(&[(input.name.as_str(), &x)])?;
    let logits: Vec<f32> = out[0].1.iter().copied().collect();
    Ok(top_k(&logits, 5))
}

/// Writes a 64×48 RGB test pattern (colour gradients and a bright square) as a PNG in a fresh
/// temporary directory (removed after the run) and returns its path.
fn demo_png() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("netc-run-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("pattern.png");
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        let inside = (20..40).contains(&x) && (14..34).contains(&y);
        if inside {
            image::Rgb([250, 240, 220])
        } else {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
        }
    });
    img.save(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let image = args.next().map(PathBuf::from);
    let model = args.next().unwrap_or_else(|| "mini_resnet".into());
    let generated = image.is_none();
    let result = image.map_or_else(demo_png, Ok).and_then(|path| {
        let what = if generated { " (generated)" } else { "" };
        println!("{model} on {}{what}", path.display());
        let top = classify(root, &model, &path);
        if generated && let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        top
    });
    match result {
        Ok(top) => {
            for (rank, (class, p)) in top.iter().enumerate() {
                println!("{:>2}. class {class:>3}  p = {p:.4}", rank + 1);
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
