//! The fused graph as stable text: one line per kernel (for `netc graph --stage fused` and
//! snapshot tests).

use std::fmt::Write as _;

use super::{BufId, BufKind, FusedGraph, FusedKernel, KernelBody};

use crate::layer_graph::show_shape as shape;

/// `k3 conv2d+add+relu (b0 [16, 3, 224, 224], b2 [64, 3, 7, 7]) -> b4 [16, 64, 112, 112]  # conv1`
pub fn fused_text(f: &FusedGraph) -> String {
    let mut out = String::new();
    for (name, b) in &f.inputs {
        let _ = writeln!(out, "input {name} = b{b} {}", shape(&f.buffers[*b].shape));
    }
    let consts = f
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufKind::Const(_)))
        .count();
    let _ = writeln!(out, "constants: {consts} buffers");
    for (i, k) in f.kernels.iter().enumerate() {
        let kind = kind(k);
        let ins: Vec<String> = k
            .inputs
            .iter()
            .map(|&b| format!("{}{b} {}", tag(f, b), shape(&f.buffers[b].shape)))
            .collect();
        let outs: Vec<String> = std::iter::once(&k.output)
            .chain(&k.more_outputs)
            .map(|&b| format!("b{b} {}", shape(&f.buffers[b].shape)))
            .collect();
        let _ = writeln!(
            out,
            "k{i} {kind} {}({}) -> {}  # {}",
            k.ops.join("+"),
            ins.join(", "),
            outs.join(", "),
            k.origin
        );
    }
    for (name, b) in &f.outputs {
        let _ = writeln!(out, "output {name} = b{b}");
    }
    out
}

/// What kind of kernel `k` is, as the listing shows it.
fn kind(k: &FusedKernel) -> &'static str {
    match &k.body {
        KernelBody::Loop(l) if l.reduction.is_some() => "reduce",
        KernelBody::Loop(l) if l.window.is_some() => "window",
        KernelBody::Loop(_) => "elementwise",
        KernelBody::Contraction(_) => "contraction",
        KernelBody::Host(_) => "host",
    }
}

/// `c` for a constant buffer, `p` for a parameter, `b` otherwise.
fn tag(f: &FusedGraph, b: BufId) -> &'static str {
    match f.buffers[b].kind {
        BufKind::Const(_) => "c",
        BufKind::Param(_) => "p",
        _ => "b",
    }
}

/// What a buffer is, in words, for JSON.
fn buffer_kind(k: &BufKind) -> serde_json::Value {
    match k {
        BufKind::Input(name) => serde_json::json!({"input": name}),
        BufKind::Const(v) => serde_json::json!({"const": v}),
        BufKind::Temp => serde_json::json!("temp"),
        BufKind::View(b) => serde_json::json!({"view_of": b}),
        BufKind::Param(p) => serde_json::json!({"param": p}),
    }
}

/// The fused graph as JSON (`netc graph --stage fused --format json`): every buffer (shape and
/// kind), every kernel (kind, ops, input and output buffers, layers), inputs and outputs.
pub fn fused_json(f: &FusedGraph) -> serde_json::Value {
    let buffers: Vec<serde_json::Value> = f
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| serde_json::json!({"id": i, "shape": b.shape, "kind": buffer_kind(&b.kind)}))
        .collect();
    let kernels: Vec<serde_json::Value> = f
        .kernels
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let outs: Vec<BufId> = std::iter::once(k.output)
                .chain(k.more_outputs.iter().copied())
                .collect();
            serde_json::json!({
                "id": i, "kind": kind(k), "ops": k.ops, "inputs": k.inputs, "outputs": outs,
                "origin": k.origin,
            })
        })
        .collect();
    let named = |v: &[(String, BufId)]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|(name, b)| serde_json::json!({"name": name, "buffer": b}))
            .collect()
    };
    serde_json::json!({
        "stage": "fused",
        "inputs": named(&f.inputs),
        "outputs": named(&f.outputs),
        "buffers": buffers,
        "kernels": kernels,
    })
}

/// The fused graph in Graphviz dot (`netc graph --stage fused --format dot`): one box per
/// kernel (ops, output shape, layers), an edge from the kernel (or input) that writes a buffer
/// to each kernel that reads it, through views; constants and parameters are left out.
pub fn fused_dot(f: &FusedGraph) -> String {
    let esc = crate::show::escape;
    let mut writer: Vec<Option<String>> = vec![None; f.buffers.len()];
    let mut out = String::from(
        "digraph fused {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
    );
    for (i, (name, b)) in f.inputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  in{i} [shape=ellipse, label=\"input {}\"];",
            esc(name)
        );
        writer[*b] = Some(format!("in{i}"));
    }
    // The buffer whose writer a view shares (views of views followed, at most once each).
    let source = |mut b: BufId| {
        for _ in 0..f.buffers.len() {
            match f.buffers[b].kind {
                BufKind::View(s) => b = s,
                _ => break,
            }
        }
        b
    };
    for (i, k) in f.kernels.iter().enumerate() {
        let _ = writeln!(
            out,
            "  k{i} [label=\"k{i} {} {}\\n-> {}\\n{}\"];",
            kind(k),
            esc(&k.ops.join("+")),
            shape(&f.buffers[k.output].shape),
            esc(&k.origin)
        );
        for &b in &k.inputs {
            if let Some(w) = &writer[source(b)] {
                let _ = writeln!(out, "  {w} -> k{i};");
            }
        }
        for &b in std::iter::once(&k.output).chain(&k.more_outputs) {
            writer[b] = Some(format!("k{i}"));
        }
    }
    for (j, (name, b)) in f.outputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{j} [shape=ellipse, label=\"output {}\"];",
            esc(name)
        );
        if let Some(w) = &writer[source(*b)] {
            let _ = writeln!(out, "  {w} -> out{j};");
        }
    }
    out.push_str("}\n");
    out
}
