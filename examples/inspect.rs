//! Build a model from a spec string with `--set`-style overrides and inspect it.
//!
//! Run: `cargo run --example inspect`

use netc::{Options, load_str};

const SPEC: &str = r#"
block vgg_stage(c: int, convs: int = 2) {
  repeat convs { seq { conv(c, 3, pad=1); batchnorm; relu } }
  maxpool(2)
}

model small_vgg(classes: int = 10, size: int = 32) {
  input image: [3, size, size]
  features: seq {
    vgg_stage(32)
    vgg_stage(64)
    vgg_stage(128, convs=3)
  }
  flatten
  classifier: seq { dropout(0.3); dense(256); relu; dense(classes) }
}
"#;

fn main() {
    let opts = Options::with_sets(&["classes=100"]).expect("valid --set syntax");
    let spec = match load_str("small_vgg.net", SPEC, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{e}");
            std::process::exit(1);
        }
    };
    let g = &spec.graph;
    println!(
        "{}: {} parameters, output {:?}",
        g.name,
        g.num_parameters(),
        g.nodes[g.outputs[0].1].shape
    );
    for p in g.params.iter().filter(|p| !p.kind.is_buffer()) {
        println!("  {:<40} {:?}", p.path, p.shape);
    }
    print!("{}", netc::show::summary(g));
}
