//! Host kernels: data movement and rare ops done in plain Rust.

use crate::fuse::HostOp;

/// Runs a host op. `ins` are the inputs with their shapes; `out` the output buffer.
pub fn run_host(
    op: &HostOp,
    ins: &[(&[f32], &[usize])],
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<(), String> {
    match op {
        HostOp::Concat { axis } => {
            let outer: usize = out_shape[..*axis].iter().product();
            let out_inner: usize = out_shape[*axis..].iter().product();
            let mut col = 0;
            for (data, shape) in ins {
                let inner: usize = shape[*axis..].iter().product();
                for o in 0..outer {
                    out[o * out_inner + col..o * out_inner + col + inner]
                        .copy_from_slice(&data[o * inner..(o + 1) * inner]);
                }
                col += inner;
            }
            Ok(())
        }
        HostOp::Slice { axis, start, end } => {
            let (data, shape) = ins[0];
            let outer: usize = shape[..*axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let len = (end - start) * inner;
            for o in 0..outer {
                let src = (o * shape[*axis] + start) * inner;
                out[o * len..(o + 1) * len].copy_from_slice(&data[src..src + len]);
            }
            Ok(())
        }
        HostOp::Permute { perm } => {
            let (data, shape) = ins[0];
            let r = shape.len();
            let mut in_strides = vec![1usize; r];
            for i in (0..r.saturating_sub(1)).rev() {
                in_strides[i] = in_strides[i + 1] * shape[i + 1];
            }
            let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
            let mut idx = vec![0usize; r];
            for o in out.iter_mut() {
                let src: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
                *o = data[src];
                for d in (0..r).rev() {
                    idx[d] += 1;
                    if idx[d] < out_shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            Ok(())
        }
        HostOp::AdaptiveAvgPool { output } => {
            let (data, shape) = ins[0];
            let (h, w) = (shape[2], shape[3]);
            let planes = shape[0] * shape[1];
            let [oh, ow] = *output;
            for p in 0..planes {
                let plane = &data[p * h * w..(p + 1) * h * w];
                for i in 0..oh {
                    let (h0, h1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                    for j in 0..ow {
                        let (w0, w1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                        let mut s = 0.0f32;
                        for y in h0..h1 {
                            for x in w0..w1 {
                                s += plane[y * w + x];
                            }
                        }
                        out[(p * oh + i) * ow + j] = s / ((h1 - h0) * (w1 - w0)) as f32;
                    }
                }
            }
            Ok(())
        }
        HostOp::RandomMask { .. } => {
            Err("random masks (dropout) exist only in training graphs".to_string())
        }
    }
}
