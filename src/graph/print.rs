//! The primitive graph as stable text, one line per node (for `netc graph --stage prims`).

use std::fmt::Write as _;

use super::{Graph, Op};

use crate::layer_graph::show_shape as shape;

/// `%7 = conv2d(s=2, p=[3,3,3,3])(%0, %1) -> [16, 64, 112, 112]  # conv1`
pub fn graph_text(g: &Graph) -> String {
    let mut out = String::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let op = op_text(&n.op);
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

/// The graph as JSON (`netc graph --stage prims --format json`): inputs and outputs by value
/// id, and one object per node (`id`, `op` as [`graph_text`] writes it, `inputs`, `shape`,
/// `origin`).
pub fn graph_json(g: &Graph) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({
                "id": i, "op": op_text(&n.op), "inputs": n.inputs, "shape": n.shape,
                "origin": n.origin,
            })
        })
        .collect();
    let named = |v: &[(String, usize)]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|(name, id)| serde_json::json!({"name": name, "value": id}))
            .collect()
    };
    serde_json::json!({
        "stage": "prims",
        "inputs": named(&g.inputs),
        "outputs": named(&g.outputs),
        "nodes": nodes,
    })
}

/// The graph in Graphviz dot (`netc graph --stage prims --format dot`): one box per node
/// (op, shape, layer), an edge per operand, outputs as ellipses.
pub fn graph_dot(g: &Graph) -> String {
    let esc = crate::show::escape;
    let mut out = String::from(
        "digraph prims {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
    );
    for (i, n) in g.nodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  v{i} [label=\"%{i} {}\\n{}\\n{}\"];",
            esc(&op_text(&n.op)),
            shape(&n.shape),
            esc(&n.origin)
        );
        for a in &n.inputs {
            let _ = writeln!(out, "  v{a} -> v{i};");
        }
    }
    for (k, (name, v)) in g.outputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{k} [shape=ellipse, label=\"output {}\"];\n  v{v} -> out{k};",
            esc(name)
        );
    }
    out.push_str("}\n");
    out
}

/// One node's op as [`graph_text`] writes it.
fn op_text(op: &Op) -> String {
    match op {
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
        } => format!("conv2d_grad_input(s={stride:?}, p={padding:?}, d={dilation:?}, g={groups})"),
        Op::Conv2dBackwardWeight {
            stride,
            padding,
            dilation,
            groups,
        } => format!("conv2d_grad_weight(s={stride:?}, p={padding:?}, d={dilation:?}, g={groups})"),
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
    }
}
