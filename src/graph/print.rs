//! The primitive graph as stable text, one line per node (for `netc graph --stage prims`).

use std::fmt::Write as _;

use super::{Graph, Op};

use crate::layer_graph::show_shape as shape;

/// `%7 = conv2d(s=2, p=[3,3,3,3])(%0, %1) -> [16, 64, 112, 112]  # conv1`
pub fn graph_text(g: &Graph) -> String {
    let mut out = String::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let op = match &n.op {
            Op::Input { name } => format!("input {name}"),
            Op::Param { index } => format!("param #{index}"),
            Op::Scalar { value } => {
                format!("scalar {}", crate::layer_graph::fmt_f64(*value as f64))
            }
            Op::Tensor { data } => format!("tensor ({} values)", data.len()),
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => format!("conv2d(s={stride:?}, p={padding:?}, d={dilation:?}, g={groups})"),
            Op::MatMul { transpose_b } => {
                if *transpose_b {
                    "matmul_t".into()
                } else {
                    "matmul".into()
                }
            }
            Op::Unary(u) => format!("{u:?}").to_lowercase(),
            Op::Binary(b) => format!("{b:?}").to_lowercase(),
            Op::Select => "select".into(),
            Op::Reduce { op, axes } => {
                format!("reduce_{}{axes:?}", format!("{op:?}").to_lowercase())
            }
            Op::Pool {
                op,
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => format!(
                "pool_{op:?}(k={kernel:?}, s={stride:?}, p={padding:?}, d={dilation:?}{})",
                if *ceil_mode { ", ceil" } else { "" }
            )
            .to_lowercase(),
            Op::AdaptiveAvgPool { output } => format!("adaptive_avgpool({output:?})"),
            Op::Reshape => "reshape".into(),
            Op::Permute { perm } => format!("permute{perm:?}"),
            Op::Concat { axis } => format!("concat(axis={axis})"),
            Op::Slice { axis, start, end } => format!("slice(axis={axis}, {start}..{end})"),
            Op::RandomMask { p, seed } => format!("random_mask(p={p}, seed={seed})"),
            Op::Expand => "expand".into(),
            Op::Pad {
                axis,
                before,
                after,
            } => format!("pad(axis={axis}, {before}, {after})"),
            Op::Conv2dBackwardData {
                stride,
                padding,
                dilation,
                groups,
            } => format!(
                "conv2d_grad_input(s={stride:?}, p={padding:?}, d={dilation:?}, g={groups})"
            ),
            Op::Conv2dBackwardWeight {
                stride,
                padding,
                dilation,
                groups,
            } => format!(
                "conv2d_grad_weight(s={stride:?}, p={padding:?}, d={dilation:?}, g={groups})"
            ),
            Op::PoolBackward {
                op,
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => format!(
                "pool_{op:?}_grad(k={kernel:?}, s={stride:?}, p={padding:?}, d={dilation:?}{})",
                if *ceil_mode { ", ceil" } else { "" }
            )
            .to_lowercase(),
            Op::AdaptiveAvgPoolBackward => "adaptive_avgpool_grad".into(),
        };
        let ins: Vec<String> = n.inputs.iter().map(|i| format!("%{i}")).collect();
        let args = if ins.is_empty() {
            String::new()
        } else {
            format!("({})", ins.join(", "))
        };
        let _ = writeln!(
            out,
            "%{i} = {op}{args} -> {}  # {}",
            shape(&n.shape),
            n.origin
        );
    }
    for (name, v) in &g.outputs {
        let _ = writeln!(out, "output {name} = %{v}");
    }
    out
}
