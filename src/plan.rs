//! Memory planning: fused graph → one arena with buffers placed by liveness.
//!
//! In: a [`FusedGraph`] (kernels in execution order). Out: a [`Plan`]: for every
//! intermediate, input and output buffer, an offset (in f32 elements) into one arena, such
//! that buffers alive at the same time never overlap. Views share their source's memory (and
//! keep it alive). Constants live outside the arena.

use crate::fuse::{BufId, BufKind, FusedGraph};
use crate::graph::numel;

/// Where each buffer lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Arena offset per buffer (`None` for constants and views).
    pub offsets: Vec<Option<usize>>,
    /// The arena's size in f32 elements.
    pub arena_len: usize,
    /// What the arena would need without reuse (the sum of all buffers), for reporting.
    pub unshared_len: usize,
}

/// Follows views to the buffer that owns the memory.
pub fn root_of(f: &FusedGraph, mut b: BufId) -> BufId {
    while let BufKind::View(src) = f.buffers[b].kind {
        b = src;
    }
    b
}

/// Places buffers: greedy best-fit by decreasing size over live intervals.
pub fn plan(f: &FusedGraph) -> Plan {
    let nb = f.buffers.len();
    let nk = f.kernels.len();
    // Live interval [first, last] in kernel steps; inputs are defined before step 0 and outputs
    // live past the last step.
    let mut first = vec![usize::MAX; nb];
    let mut last = vec![0usize; nb];
    let touch = |b: BufId, t: usize, first: &mut Vec<usize>, last: &mut Vec<usize>| {
        let r = root_of(f, b);
        first[r] = first[r].min(t);
        last[r] = last[r].max(t);
    };
    for (_, b) in &f.inputs {
        touch(*b, 0, &mut first, &mut last);
    }
    for (t, k) in f.kernels.iter().enumerate() {
        for &b in &k.inputs {
            touch(b, t, &mut first, &mut last);
        }
        for &b in std::iter::once(&k.output).chain(&k.more_outputs) {
            touch(b, t, &mut first, &mut last);
        }
    }
    for (_, b) in &f.outputs {
        touch(*b, nk, &mut first, &mut last);
    }
    let mut owners: Vec<BufId> = (0..nb)
        .filter(|&b| {
            matches!(f.buffers[b].kind, BufKind::Temp | BufKind::Input(_)) && first[b] != usize::MAX
        })
        .collect();
    owners.sort_by_key(|&b| (std::cmp::Reverse(numel(&f.buffers[b].shape)), b));
    let mut offsets = vec![None; nb];
    // (offset, len, first, last) of placed buffers.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut arena_len = 0;
    let mut unshared_len = 0;
    for b in owners {
        let len = numel(&f.buffers[b].shape).max(1);
        unshared_len += len;
        // Intervals of buffers alive at the same time, sorted by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| p.2 <= last[b] && first[b] <= p.3)
            .map(|p| (p.0, p.0 + p.1))
            .collect();
        busy.sort_unstable();
        // The smallest gap that fits, else the end.
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for &(s, e) in &busy {
            if s >= cursor + len && best.is_none_or(|(g, _)| s - cursor < g) {
                best = Some((s - cursor, cursor));
            }
            cursor = cursor.max(e);
        }
        let off = best.map(|(_, o)| o).unwrap_or(cursor);
        placed.push((off, len, first[b], last[b]));
        offsets[b] = Some(off);
        arena_len = arena_len.max(off + len);
    }
    Plan {
        offsets,
        arena_len,
        unshared_len,
    }
}
