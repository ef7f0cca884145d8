//! The fused graph as stable text: one line per kernel (for `netc graph --stage fused` and
//! snapshot tests).

use std::fmt::Write as _;

use super::{BufKind, FusedGraph, KernelBody};

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
        let kind = match &k.body {
            KernelBody::Loop(l) if l.reduction.is_some() => "reduce",
            KernelBody::Loop(l) if l.window.is_some() => "window",
            KernelBody::Loop(_) => "elementwise",
            KernelBody::Contraction(_) => "contraction",
            KernelBody::Host(_) => "host",
        };
        let ins: Vec<String> = k
            .inputs
            .iter()
            .map(|&b| {
                let tag = match f.buffers[b].kind {
                    BufKind::Const(_) => "c",
                    BufKind::Param(_) => "p",
                    _ => "b",
                };
                format!("{tag}{b} {}", shape(&f.buffers[b].shape))
            })
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
