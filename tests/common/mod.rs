//! Helpers shared by the integration tests that use the PyTorch reference cases.

use netc::{Options, Spec, load_file};

/// The PyTorch reference cases under `tests/data/reference/`: the three models of the shared
/// reference data, and mini_resnet on 2x2 inputs, whose later 3x3 convolutions see 1x1 maps
/// (netc crops those kernels; PyTorch convolves them whole).
pub const REFERENCE_MODELS: [&str; 4] =
    ["lenet5", "mini_resnet", "mini_inception", "mini_resnet_2x2"];

/// The spec of reference case `name`: `specs/<name>.net`, with the case's parameter overrides.
pub fn reference_spec(name: &str) -> Spec {
    let (file, sets): (&str, &[&str]) = match name {
        "mini_resnet_2x2" => ("mini_resnet", &["size=2"]),
        other => (other, &[]),
    };
    let options = Options::with_sets(sets).unwrap();
    load_file(format!("specs/{file}.net"), &options).unwrap_or_else(|e| panic!("{e}"))
}
