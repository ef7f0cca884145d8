//! Printers of the layer graph: the summary table, and the graph as text, Graphviz dot or JSON.
//!
//! In: a [`LayerGraph`]. Out: strings. The text form is stable and meant for snapshot tests
//! (`insta`); the JSON form for tools; dot clusters nodes by the block instance they belong to.

use std::fmt::Write as _;

use serde_json::{Value as Json, json};

use crate::elab::value::show_shape;
use crate::layer_graph::{DType, LayerGraph, Node};

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.82 GFLOPs`-style figures.
pub fn human(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} G", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2} M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.2} K", f / 1e3)
    } else {
        format!("{n} ")
    }
}

fn node_params(g: &LayerGraph, n: &Node) -> u64 {
    n.params
        .iter()
        .map(|&p| &g.params[p])
        .filter(|p| !p.kind.is_buffer())
        .map(|p| p.numel() as u64)
        .sum()
}

fn header(g: &LayerGraph) -> String {
    let params: Vec<String> = g
        .model_params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("model {}({})", g.name, params.join(", "))
}

/// Per node: its number as `--freeze ..N` counts layers (1-based, on the first node of each
/// top-level module with parameters, see [`crate::elab::numbered_layers`]), else `None`.
fn layer_numbers(g: &LayerGraph) -> Vec<Option<usize>> {
    let tops = crate::elab::numbered_layers(g);
    let mut done = vec![false; tops.len()];
    g.nodes
        .iter()
        .map(|n| {
            if n.params.is_empty() {
                return None;
            }
            let top = n.path.split('.').next().unwrap_or("");
            let k = tops.iter().position(|t| *t == top)?;
            (!std::mem::replace(&mut done[k], true)).then_some(k + 1)
        })
        .collect()
}

/// The `netc summary` table: one row per layer, then totals. The `#` column numbers the
/// layers as `--freeze ..N` counts them.
pub fn summary(g: &LayerGraph) -> String {
    let numbers = layer_numbers(g);
    let mut rows: Vec<[String; 6]> = vec![[
        "#".into(),
        "layer".into(),
        "op".into(),
        "output".into(),
        "params".into(),
        "FLOPs".into(),
    ]];
    let mut total_flops = 0u64;
    let mut shared_seen = std::collections::HashSet::new();
    for (n, number) in g.nodes.iter().zip(&numbers) {
        let f = g.flops(n);
        total_flops = total_flops.saturating_add(f);
        // Shared modules' parameters count once.
        let p: u64 = n
            .params
            .iter()
            .filter(|&&p| shared_seen.insert(p))
            .map(|&p| &g.params[p])
            .filter(|p| !p.kind.is_buffer())
            .map(|p| p.numel() as u64)
            .sum();
        let path = if n.frozen {
            format!("{} (frozen)", n.path)
        } else {
            n.path.clone()
        };
        rows.push([
            number.map(|k| k.to_string()).unwrap_or_default(),
            path,
            n.op.describe(),
            show_shape(&n.shape),
            if p == 0 { "-".into() } else { thousands(p) },
            if f == 0 {
                "-".into()
            } else {
                human(f).trim().to_string()
            },
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(g));
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  {:>w5$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
            w5 = widths[5]
        );
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 10;
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    let buffers: usize = g
        .params
        .iter()
        .filter(|p| p.kind.is_buffer())
        .map(|p| p.numel())
        .sum();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "parameters: {} ({} trainable), buffers: {}",
        thousands(g.num_parameters() as u64),
        thousands(g.num_trainable() as u64),
        thousands(buffers as u64)
    );
    let _ = writeln!(
        out,
        "FLOPs per sample: {}FLOP ({}), layers: {}",
        human(total_flops),
        thousands(total_flops),
        g.nodes.len()
    );
    let _ = writeln!(
        out,
        "inputs: {}",
        g.inputs
            .iter()
            .map(|i| format!("{} {}", i.name, show_shape(&i.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "outputs: {}",
        g.outputs
            .iter()
            .map(|(name, n)| format!("{name} {}", show_shape(&g.nodes[*n].shape)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out += &train_text(g);
    out
}

fn train_text(g: &LayerGraph) -> String {
    let Some(t) = &g.train else {
        return String::new();
    };
    let mut out = String::from("train:\n");
    if let Some(l) = &t.loss {
        let _ = writeln!(out, "  loss: {l}");
    }
    if let Some(o) = &t.optimizer {
        let _ = writeln!(out, "  optimizer: {o}");
    }
    if let Some(s) = &t.schedule {
        let _ = writeln!(out, "  schedule: {s}");
    }
    if let Some(b) = t.batch {
        let _ = writeln!(out, "  batch: {b}");
    }
    if let Some(e) = t.epochs {
        let _ = writeln!(out, "  epochs: {e}");
    }
    if let Some(d) = &t.data {
        let _ = writeln!(out, "  data: {d}");
    }
    if !t.augment.is_empty() {
        let a: Vec<String> = t.augment.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(out, "  augment: [{}]", a.join(", "));
    }
    if !t.freeze.is_empty() {
        let _ = writeln!(out, "  freeze: [{}]", t.freeze.join(", "));
    }
    if let Some(s) = t.seed {
        let _ = writeln!(out, "  seed: {s}");
    }
    out
}

/// The graph as stable text: one line per node with its inputs, shape and parameters.
pub fn graph_text(g: &LayerGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(g));
    for i in &g.inputs {
        let mut line = format!("input {} {}", i.name, show_shape(&i.shape));
        if !i.mean.is_empty() {
            line += &format!(" mean={:?}", i.mean);
        }
        if !i.std.is_empty() {
            line += &format!(" std={:?}", i.std);
        }
        let _ = writeln!(out, "{line}");
    }
    for n in &g.nodes {
        if matches!(n.op, crate::layer_graph::Op::Input { .. }) {
            continue;
        }
        let ins: Vec<String> = n.inputs.iter().map(|i| format!("%{i}")).collect();
        let mut line = format!(
            "%{} = {} {}({}) -> {}",
            n.id,
            n.path,
            n.op.describe(),
            ins.join(", "),
            show_shape(&n.shape)
        );
        if n.frozen {
            line += " frozen";
        }
        if !n.params.is_empty() {
            let ps: Vec<String> = n
                .params
                .iter()
                .map(|&p| {
                    let p = &g.params[p];
                    let suffix = p.path.rsplit('.').next().unwrap_or("");
                    let mut s = format!("{suffix}{}", show_shape(&p.shape));
                    if p.fixed.is_some() {
                        s += "=fixed";
                    }
                    s
                })
                .collect();
            line += &format!("  {{{}}}", ps.join(" "));
        }
        let _ = writeln!(out, "{line}");
    }
    for (name, n) in &g.outputs {
        let _ = writeln!(out, "output {name} = %{n}");
    }
    let _ = writeln!(
        out,
        "parameters: {} ({} trainable)",
        thousands(g.num_parameters() as u64),
        thousands(g.num_trainable() as u64)
    );
    out += &train_text(g);
    out
}

/// The graph for Graphviz, with one cluster per block instance.
pub fn graph_dot(g: &LayerGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", g.name);
    let _ = writeln!(
        out,
        "  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    // Emit nodes nested in their clusters. Nodes of one block instance are contiguous, so a
    // stack of open clusters suffices.
    let mut open: Vec<(String, String)> = Vec::new();
    let mut cluster_id = 0;
    for n in &g.nodes {
        let common = open
            .iter()
            .zip(&n.scopes)
            .take_while(|(a, b)| a == b)
            .count();
        while open.len() > common {
            open.pop();
            let _ = writeln!(out, "{}}}", "  ".repeat(open.len() + 1));
        }
        for s in &n.scopes[common..] {
            let _ = writeln!(
                out,
                "{}subgraph cluster_{cluster_id} {{ label=\"{} : {}\"; style=rounded;",
                "  ".repeat(open.len() + 1),
                escape(&s.0),
                escape(&s.1)
            );
            cluster_id += 1;
            open.push(s.clone());
        }
        let label = format!(
            "{}\\n{}\\n{}",
            n.path,
            n.op.describe(),
            show_shape(&n.shape)
        );
        let _ = writeln!(
            out,
            "{}n{} [label=\"{}\"{}];",
            "  ".repeat(open.len() + 1),
            n.id,
            escape(&label).replace("\\\\n", "\\n"),
            if n.frozen {
                ", style=filled, fillcolor=lightgrey"
            } else {
                ""
            }
        );
    }
    while !open.is_empty() {
        open.pop();
        let _ = writeln!(out, "{}}}", "  ".repeat(open.len() + 1));
    }
    for n in &g.nodes {
        for i in &n.inputs {
            let _ = writeln!(out, "  n{i} -> n{};", n.id);
        }
    }
    out += "}\n";
    out
}

/// Escapes a string for a Graphviz label.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph as JSON (for tools): nodes, parameters, inputs, outputs, training settings.
pub fn graph_json(g: &LayerGraph) -> Json {
    let nodes: Vec<Json> = g
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "path": n.path,
                "op": n.op.name(),
                "desc": n.op.describe(),
                "inputs": n.inputs,
                "shape": n.shape,
                "params": n.params.iter().map(|&p| g.params[p].path.clone()).collect::<Vec<_>>(),
                "frozen": n.frozen,
                "flops": g.flops(n),
                "blocks": n.scopes.iter().map(|(p, b)| json!({"path": p, "block": b})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let params: Vec<Json> = g
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.path,
                "shape": p.shape,
                "dtype": match p.dtype { DType::F32 => "float32", DType::I64 => "int64" },
                "kind": p.kind.suffix(),
                "trainable": p.trainable,
                "fixed": p.fixed.is_some(),
            })
        })
        .collect();
    json!({
        "model": g.name,
        "model_params": g.model_params.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "inputs": g.inputs.iter().map(|i| json!({"name": i.name, "node": i.node, "shape": i.shape, "mean": i.mean, "std": i.std})).collect::<Vec<_>>(),
        "nodes": nodes,
        "params": params,
        "outputs": g.outputs.iter().map(|(k, n)| json!({"name": k, "node": n})).collect::<Vec<_>>(),
        "parameters": g.num_parameters(),
        "trainable": g.num_trainable(),
        "train": g.train.as_ref().map(|_| train_text(g)),
    })
}

/// `netc summary --json`: per-layer rows and totals.
pub fn summary_json(g: &LayerGraph) -> Json {
    let numbers = layer_numbers(g);
    let layers: Vec<Json> = g
        .nodes
        .iter()
        .zip(numbers)
        .map(|(n, number)| {
            json!({
                "number": number,
                "path": n.path,
                "op": n.op.describe(),
                "shape": n.shape,
                "params": node_params(g, n),
                "flops": g.flops(n),
                "frozen": n.frozen,
            })
        })
        .collect();
    json!({
        "model": g.name,
        "layers": layers,
        "parameters": g.num_parameters(),
        "trainable": g.num_trainable(),
        "flops": g.nodes.iter().fold(0u64, |t, n| t.saturating_add(g.flops(n))),
        "inputs": g.inputs.iter().map(|i| json!({"name": i.name, "shape": i.shape})).collect::<Vec<_>>(),
        "outputs": g.outputs.iter().map(|(k, n)| json!({"name": k, "shape": g.nodes[*n].shape})).collect::<Vec<_>>(),
    })
}
