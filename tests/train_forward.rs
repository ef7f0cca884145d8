//! Training-mode forward pass (batchnorm with batch statistics, running statistics updated)
//! against PyTorch's `train_output.npy` and `state_after_forward.safetensors`, through the
//! reference interpreter and through the JIT.

use ndarray::{ArrayD, IxDyn};
use netc::io::weights::Weights;
use netc::lower::{Mode, lower_with};
use netc::model::{jit, params_f32};
use netc::runtime::Executable;
use netc::{Options, load_file};

fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The f32 tensors of a safetensors file, by name.
fn tensors(path: &str) -> Vec<(String, ArrayD<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| {
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, ArrayD::from_shape_vec(IxDyn(t.shape()), v).unwrap())
        })
        .collect()
}

#[test]
fn train_mode_forward_matches_pytorch() {
    for name in ["lenet5", "mini_resnet", "mini_inception"] {
        let spec = load_file(format!("specs/{name}.net"), &Options::default()).unwrap();
        let dir = format!("tests/data/reference/{name}");
        let w = Weights::load(format!("{dir}/weights.safetensors"), &spec.graph).unwrap();
        let params = params_f32(&w);
        let x = netc::io::npy::read_f32(format!("{dir}/input.npy")).unwrap();
        let want = netc::io::npy::read_f32(format!("{dir}/train_output.npy")).unwrap();
        let state = tensors(&format!("{dir}/state_after_forward.safetensors"));
        let prims = lower_with(&spec.graph, x.shape()[0], Mode::Training);

        let oracle = netc::reference::run::<f32>(&prims, &params, &[("image", x.clone())]).unwrap();
        let mut exe =
            Executable::new(netc::fuse::fuse(&prims), &params, jit().unwrap(), 2).unwrap();
        let jitted: Vec<ArrayD<f32>> = exe
            .run(&[("image", &x)])
            .unwrap()
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        for (label, outs) in [("oracle", &oracle), ("jit", &jitted)] {
            let e = rel_err(&outs[0], &want);
            assert!(e <= 1e-4, "{name} {label}: train output error {e:e}");
            // Every running statistic PyTorch updated, under its buffer path.
            let mut checked = 0;
            for ((out_name, _), value) in prims.outputs.iter().zip(outs.iter()).skip(1) {
                let (_, expected) = state
                    .iter()
                    .find(|(n, _)| n == out_name)
                    .unwrap_or_else(|| panic!("{name}: no {out_name} in the reference"));
                let e = rel_err(value, expected);
                assert!(e <= 1e-4, "{name} {label}: {out_name} error {e:e}");
                checked += 1;
            }
            let expected_stats = state
                .iter()
                .filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
                .count();
            assert_eq!(
                checked, expected_stats,
                "{name}: running statistics compared"
            );
        }
    }
}
