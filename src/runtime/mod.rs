//! The runtime: runs a compiled model.
//!
//! In: a [`FusedGraph`], its memory [`Plan`], the compiled kernels and the constant buffers
//! (parameters and values folded from them). Out: [`Executable::run`], which copies the
//! inputs into the arena, runs every kernel in order (each split over a persistent thread
//! pool) and returns the outputs.

mod contraction;
mod fold;
mod host;
pub mod pool;
pub mod post;
pub mod sgemm;
pub(crate) mod split;
mod winograd;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndarray::ArrayD;

use crate::codegen::{CompiledKernel, Jit};
use crate::fuse::kernel::{Contraction, ContractionKind, LoopKernel};
use crate::fuse::{BufId, BufKind, FusedGraph, HostOp, KernelBody};
use crate::graph::{ValueId, numel};
use crate::plan::{Plan, plan, root_of};
use pool::Pool;

/// What a step of the program runs.
enum Step {
    Loop(Arc<CompiledKernel>),
    Contraction {
        kind: ContractionKind,
        epilogue: Option<Arc<CompiledKernel>>,
    },
    /// A convolution's backward-data pass and its epilogue (run like a contraction's).
    BackwardData {
        kind: ContractionKind,
        epilogue: Option<Arc<CompiledKernel>>,
    },
    Host(crate::fuse::HostOp),
}

/// Compilation figures, for `netc compile` and `netc bench`.
#[derive(Debug, Clone, Default)]
pub struct CompileStats {
    /// Kernels in the program.
    pub kernels: usize,
    /// Distinct generated functions (equal kernels share one).
    pub functions: usize,
    /// Time spent in Cranelift.
    pub codegen_time: Duration,
    /// The arena's size and what it would be without reuse, in bytes.
    pub arena_bytes: usize,
    pub unshared_bytes: usize,
    /// Bytes held by constants (weights, folded values).
    pub const_bytes: usize,
}

/// A model ready to run at a fixed batch size.
pub struct Executable {
    fused: FusedGraph,
    plan: Plan,
    steps: Vec<Step>,
    consts: HashMap<BufId, Arc<Vec<f32>>>,
    arena: Vec<f32>,
    pool: Pool,
    pub stats: CompileStats,
    /// The compiled function of each loop kernel or epilogue, by kernel index.
    pub functions: Vec<Option<Arc<CompiledKernel>>>,
    /// Keeps the generated code alive as long as this program can call it.
    _jit: Arc<Mutex<Jit>>,
    /// Time spent in each kernel since profiling was enabled (see [`Executable::profile`]).
    times: Option<Vec<Duration>>,
    bindings: Vec<Binding>,
    /// See [`Executable::set_random_step`].
    random_step: u64,
    /// The transformed weight of each Winograd convolution whose weight is a constant
    /// (inference), by kernel index: made on the first run, reused by every later one.
    wino_weights: HashMap<usize, Vec<f32>>,
}

/// How [`Executable::with_budget`] checks memory: against `limit` bytes (the memory
/// available when `None`), counting `extra` (the caller's other allocations) too, naming
/// parameters by `names`' paths when given.
#[derive(Debug, Clone, Default)]
pub struct Budget<'a> {
    pub limit: Option<u64>,
    pub extra: crate::budget::Estimate,
    pub names: Option<&'a crate::layer_graph::LayerGraph>,
}

/// One row of a kernel profile.
#[derive(Debug, Clone)]
pub struct KernelProfile {
    pub index: usize,
    /// How a convolution pass ran when it is worth telling: `"winograd"` (its GFLOP/s then
    /// count the direct multiply-adds), else empty.
    pub algorithm: &'static str,
    pub ops: String,
    pub origin: String,
    pub shape: Vec<usize>,
    pub time: Duration,
    /// Floating-point operations per run (contractions: 2·M·N·K; others: one per output).
    pub flops: u64,
    /// Bytes moved per run, at least: every input buffer read once and the output written
    /// once (packing, im2col and re-reads come on top).
    pub bytes: u64,
}

/// A raw pointer that may cross into pool tasks (each task touches a disjoint part).
/// Transparent, so a `[P]` is an array of pointers the generated code can take.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct P(*mut f32);

/// A compiled epilogue that tasks run on the whole images they finish, while those are in
/// cache: the function and its input array.
#[derive(Clone, Copy)]
struct ImageEpilogue {
    func: crate::codegen::KernelFn,
    inputs: P,
}

impl ImageEpilogue {
    /// `epi`, when its outer index is the image of an `n`-image output of `len` floats.
    fn of(epi: Option<(&CompiledKernel, &[P])>, n: usize, len: usize) -> Option<ImageEpilogue> {
        epi.filter(|(e, _)| e.outer == n && e.output_len == len)
            .map(|(e, fi)| ImageEpilogue {
                func: e.func,
                inputs: P(fi.as_ptr() as *mut f32),
            })
    }

    /// Runs it on images `imgs` of `out`.
    ///
    /// # Safety
    /// As [`run_loop`]: the input array and `out` are the kernel's; images `imgs` of `out` are
    /// complete and no other task writes them meanwhile.
    unsafe fn run(&self, out: P, imgs: std::ops::Range<usize>) {
        // SAFETY: the caller's contract.
        unsafe {
            (self.func)(
                self.inputs.get() as *const *const f32,
                out.get(),
                imgs.start,
                imgs.end,
            )
        }
    }
}

/// The buffer addresses one kernel uses, resolved once (the arena never moves).
struct Binding {
    ins: Vec<P>,
    out: P,
    /// What the generated function receives as its input array: the inputs for a loop
    /// kernel; `[raw result, extras...]` for a contraction's epilogue.
    fn_inputs: Vec<P>,
    /// A convolution's epilogue in the form its product applies as it stores ([`post`]).
    post: Option<post::PostOp>,
}
// SAFETY: used only to hand disjoint regions of buffers to pool tasks, which finish before
// the buffers are touched again.
unsafe impl Send for P {}
unsafe impl Sync for P {}

impl P {
    /// The pointer (a method, so closures capture the whole `P`, which is `Sync`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl Executable {
    /// Compiles a fused graph with the given parameter values (indexed like
    /// `LayerGraph::params`).
    ///
    /// What it will allocate is checked against the memory available first
    /// ([`crate::budget`]); see [`Executable::with_budget`] for another limit.
    pub fn new(
        fused: FusedGraph,
        params: &[ArrayD<f32>],
        jit_handle: Arc<Mutex<Jit>>,
        threads: usize,
    ) -> Result<Executable, String> {
        Self::with_budget(fused, params, jit_handle, threads, Budget::default())
    }

    /// As [`Executable::new`], with the memory it will allocate, plus `budget.extra` (what
    /// the caller allocates besides), checked against `budget.limit` before anything is
    /// allocated.
    pub fn with_budget(
        fused: FusedGraph,
        params: &[ArrayD<f32>],
        jit_handle: Arc<Mutex<Jit>>,
        threads: usize,
        budget: Budget,
    ) -> Result<Executable, String> {
        pool::check_threads(threads)?;
        let plan = plan(&fused);
        let mut estimate = crate::budget::executable(&fused, &plan, threads, budget.names);
        estimate.extend("", budget.extra);
        estimate.check(budget.limit)?;
        let mut guard = jit_handle.lock().unwrap_or_else(|p| p.into_inner());
        let jit = &mut *guard;
        let wanted: Vec<ValueId> = fused
            .buffers
            .iter()
            .filter_map(|b| match b.kind {
                BufKind::Const(v) => Some(v),
                _ => None,
            })
            .collect();
        let vals = fold::eval_consts(&fused.prims, params, &wanted)?;
        let mut consts = HashMap::new();
        let mut const_bytes = 0;
        for (i, b) in fused.buffers.iter().enumerate() {
            if let BufKind::Param(index) = b.kind {
                let p = params
                    .get(index)
                    .ok_or_else(|| format!("no value for parameter #{index}"))?;
                if p.shape() != b.shape.as_slice() {
                    return Err(format!(
                        "parameter #{index} has shape {:?}, expected {:?}",
                        p.shape(),
                        b.shape
                    ));
                }
                let what = format!("parameter #{index}");
                consts.insert(i, Arc::new(fold::copy_of(p, &what)?));
                continue;
            }
            if let BufKind::Const(v) = b.kind {
                let a = &vals[&v];
                let what = format!("a constant of {}", fused.prims.nodes[v].origin);
                let data = fold::copy_of(a, &what)?;
                const_bytes += data.len() * 4;
                consts.insert(i, Arc::new(data));
            }
        }
        let before = jit.cached();
        let mut codegen_time = Duration::ZERO;
        let mut steps = Vec::new();
        let mut functions = Vec::new();
        for k in &fused.kernels {
            let mut compile = |lk| -> Result<Arc<CompiledKernel>, String> {
                let known = jit.cached();
                let c = jit.compile(&squeeze_outer(lk))?;
                // Only new functions cost Cranelift time now (a cache hit cost it earlier).
                if jit.cached() > known {
                    codegen_time += c.compile_time;
                }
                Ok(c)
            };
            let step = match &k.body {
                KernelBody::Loop(lk) => {
                    let c = compile(lk)?;
                    functions.push(Some(c.clone()));
                    Step::Loop(c)
                }
                KernelBody::Contraction(Contraction { kind, epilogue }) => {
                    let e = epilogue.as_ref().map(&mut compile).transpose()?;
                    functions.push(e.clone());
                    Step::Contraction {
                        kind: kind.clone(),
                        epilogue: e,
                    }
                }
                KernelBody::Host(HostOp::Conv2dBackwardData(kind, epilogue)) => {
                    let e = epilogue.as_deref().map(&mut compile).transpose()?;
                    functions.push(e.clone());
                    Step::BackwardData {
                        kind: kind.clone(),
                        epilogue: e,
                    }
                }
                KernelBody::Host(h) => {
                    functions.push(None);
                    Step::Host(h.clone())
                }
            };
            steps.push(step);
        }
        let stats = CompileStats {
            kernels: fused.kernels.len(),
            functions: jit.cached() - before,
            codegen_time,
            arena_bytes: plan.arena_len * 4,
            unshared_bytes: plan.unshared_len * 4,
            const_bytes,
        };
        drop(guard);
        let pool = Pool::new(threads)?;
        let mut exe = Executable {
            bindings: Vec::new(),
            times: None,
            random_step: 0,
            wino_weights: HashMap::new(),
            _jit: jit_handle,
            // A trial allocation first, then a zeroed one, whose pages the system provides
            // as kernels first write them (not now, while the folded values are still held).
            arena: {
                crate::budget::try_reserve::<f32>(plan.arena_len, "the arena")?;
                vec![0.0; plan.arena_len]
            },
            fused,
            plan,
            steps,
            consts,
            pool,
            stats,
            functions,
        };
        exe.bindings = (0..exe.fused.kernels.len())
            .map(|i| {
                let k = exe.fused.kernels[i].clone();
                let ins: Vec<P> = k.inputs.iter().map(|&b| P(exe.ptr(b))).collect();
                let out = P(exe.ptr(k.output));
                let fn_inputs: Vec<P> = match &k.body {
                    KernelBody::Contraction(_)
                    | KernelBody::Host(HostOp::Conv2dBackwardData(_, Some(_))) => {
                        std::iter::once(out)
                            .chain(ins[2..].iter().copied())
                            .collect()
                    }
                    // A reduction's further outputs follow its inputs.
                    _ => ins
                        .iter()
                        .copied()
                        .chain(k.more_outputs.iter().map(|&b| P(exe.ptr(b))))
                        .collect(),
                };
                let post = match &k.body {
                    KernelBody::Contraction(Contraction {
                        kind: ContractionKind::Conv2d { .. },
                        epilogue: Some(e),
                    }) => {
                        let ptrs: Vec<*const f32> =
                            fn_inputs.iter().map(|p| p.get() as *const f32).collect();
                        post::PostOp::recognize(e, &ptrs)
                    }
                    _ => None,
                };
                Binding {
                    ins,
                    out,
                    fn_inputs,
                    post,
                }
            })
            .collect();
        Ok(exe)
    }

    pub fn fused(&self) -> &FusedGraph {
        &self.fused
    }

    /// Starts (or restarts) timing each kernel.
    pub fn enable_profiling(&mut self) {
        self.times = Some(vec![Duration::ZERO; self.steps.len()]);
    }

    /// The matrix product's throughput on this machine now, in GFLOP/s: every pool thread
    /// computes `C[288×1024] = A[288×512] · B[512×1024]` (each operand's block in L2, as a
    /// large convolution's are) in rounds for about `budget`; the best round counts. What
    /// `netc bench --profile` rates each kernel against: the machine's speed drifts, so the
    /// reference is measured in the same run as the kernels.
    pub fn gemm_peak(&self, budget: Duration) -> f64 {
        const M: usize = 288;
        const N: usize = 1024;
        const K: usize = 512;
        let threads = self.pool.threads();
        let mut bufs: Vec<Vec<f32>> = (0..threads)
            .map(|t| {
                (0..M * K + K * N + M * N)
                    .map(|i| ((i * 7 + t) % 13) as f32 / 13.0 - 0.5)
                    .collect()
            })
            .collect();
        let ptrs: Vec<P> = bufs.iter_mut().map(|b| P(b.as_mut_ptr())).collect();
        let mut best = 0f64;
        let start = std::time::Instant::now();
        let mut rounds = 0;
        while rounds < 3 || start.elapsed() < budget {
            let t0 = std::time::Instant::now();
            self.pool.run(threads, &|t| {
                let base = ptrs[t].get();
                // SAFETY: thread t's buffer holds A, B and C back to back.
                unsafe {
                    contraction::gemm(
                        M,
                        N,
                        K,
                        base.add(M * K + K * N),
                        N as isize,
                        base,
                        K as isize,
                        1,
                        base.add(M * K),
                        N as isize,
                        1,
                    )
                }
            });
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            best = best.max((2 * M * N * K * threads) as f64 / secs / 1e9);
            rounds += 1;
        }
        drop(bufs);
        best
    }

    /// Time per kernel since [`Executable::enable_profiling`], slowest first.
    pub fn profile(&self) -> Vec<KernelProfile> {
        let Some(times) = &self.times else {
            return Vec::new();
        };
        let mut rows: Vec<KernelProfile> = self
            .fused
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let shape = self.fused.buffers[k.output].shape.clone();
                let flops = match &k.body {
                    KernelBody::Contraction(c) => match c.kind {
                        ContractionKind::Conv2d {
                            c: ch,
                            kernel,
                            groups,
                            ..
                        } => {
                            2 * numel(&shape) as u64 * (ch / groups * kernel[0] * kernel[1]) as u64
                        }
                        ContractionKind::MatMul { batch, m, k, n, .. } => {
                            2 * (batch * m * k * n) as u64
                        }
                    },
                    _ => numel(&shape) as u64,
                };
                let bytes = k
                    .inputs
                    .iter()
                    .chain(std::iter::once(&k.output))
                    .chain(&k.more_outputs)
                    .map(|&b| 4 * numel(&self.fused.buffers[b].shape) as u64)
                    .sum();
                KernelProfile {
                    index: i,
                    algorithm: if winograd_runs(&k.body) {
                        "winograd"
                    } else {
                        ""
                    },
                    ops: k.ops.join("+"),
                    origin: k.origin.clone(),
                    shape,
                    time: times[i],
                    flops,
                    bytes,
                }
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.time));
        rows
    }

    /// The variable parameters (training): `(LayerGraph::params index, values)`, in buffer
    /// order.
    pub fn params(&self) -> Vec<(usize, &[f32])> {
        self.fused
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(b, buf)| match buf.kind {
                BufKind::Param(index) => Some((index, self.consts[&b].as_slice())),
                _ => None,
            })
            .collect()
    }

    /// Mutable access to the variable parameters (the optimizer updates them in place between
    /// runs), as `(LayerGraph::params index, values)`.
    pub fn params_mut(&mut self) -> Vec<(usize, &mut [f32])> {
        let kinds: HashMap<BufId, usize> = self
            .fused
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(b, buf)| match buf.kind {
                BufKind::Param(index) => Some((b, index)),
                _ => None,
            })
            .collect();
        let mut out: Vec<(usize, &mut [f32])> = self
            .consts
            .iter_mut()
            .filter_map(|(b, data)| {
                let index = *kinds.get(b)?;
                // The executable is the only owner of its parameter buffers.
                Arc::get_mut(data).map(|d| (index, d.as_mut_slice()))
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out
    }

    /// The variable parameters, mutable, as (parameter index, values) sorted by index, and
    /// every output's values after [`Executable::run_in_place`], by name: what an optimizer
    /// step needs at once. Fails if an output is itself a variable parameter.
    #[allow(clippy::type_complexity)]
    pub fn params_and_outputs(
        &mut self,
    ) -> Result<(Vec<(usize, &mut [f32])>, HashMap<String, &[f32]>), String> {
        let mut params: Vec<(usize, &mut [f32])> = Vec::new();
        let mut fixed: HashMap<BufId, &[f32]> = HashMap::new();
        for (&b, data) in self.consts.iter_mut() {
            match self.fused.buffers[b].kind {
                BufKind::Param(index) => {
                    let d = Arc::get_mut(data)
                        .ok_or("a parameter buffer is shared (internal error)")?;
                    params.push((index, d.as_mut_slice()));
                }
                _ => {
                    fixed.insert(b, data.as_slice());
                }
            }
        }
        params.sort_by_key(|(i, _)| *i);
        let mut outs = HashMap::new();
        for (name, b) in &self.fused.outputs {
            let r = root_of(&self.fused, *b);
            let n = numel(&self.fused.buffers[*b].shape);
            let data = match self.plan.offsets[r] {
                Some(off) => &self.arena[off..off + n],
                None => match fixed.get(&r) {
                    Some(d) => &d[..n],
                    None => return Err(format!("the output `{name}` is a variable parameter")),
                },
            };
            outs.insert(name.clone(), data);
        }
        Ok((params, outs))
    }

    /// An output's values after [`Executable::run_in_place`], without copying.
    pub fn output(&self, name: &str) -> Option<&[f32]> {
        let (_, b) = self.fused.outputs.iter().find(|(n, _)| n == name)?;
        let r = root_of(&self.fused, *b);
        let n = self.len_of(*b);
        Some(match self.plan.offsets[r] {
            Some(off) => &self.arena[off..off + n],
            None => &self.consts[&r][..n],
        })
    }

    /// Runs the model on inputs given as flat row-major slices (shapes as compiled), leaving
    /// the outputs in place for [`Executable::output`]: the training loop's allocation-free
    /// path.
    pub fn run_in_place(&mut self, inputs: &[(&str, &[f32])]) -> Result<(), String> {
        for (name, b) in self.fused.inputs.clone() {
            let Some((_, x)) = inputs.iter().find(|(n, _)| *n == name) else {
                return Err(format!("missing input `{name}`"));
            };
            let want = numel(&self.fused.buffers[b].shape);
            if x.len() != want {
                return Err(format!(
                    "input `{name}` has {} values, the model expects {want} ({:?})",
                    x.len(),
                    self.fused.buffers[b].shape
                ));
            }
            let off = self.plan.offsets[b].expect("inputs live in the arena");
            self.arena[off..off + want].copy_from_slice(x);
        }
        for i in 0..self.steps.len() {
            if self.times.is_some() {
                let t = std::time::Instant::now();
                self.step(i)?;
                if let Some(times) = &mut self.times {
                    times[i] += t.elapsed();
                }
            } else {
                self.step(i)?;
            }
        }
        Ok(())
    }

    /// Selects the stream of the random masks (dropout) for the next runs: step 0 is the
    /// masks' own seeds (as the reference interpreter computes them); a training loop passes
    /// a new value every step.
    pub fn set_random_step(&mut self, step: u64) {
        self.random_step = step;
    }

    /// Pointer to a buffer's first element.
    fn ptr(&mut self, b: BufId) -> *mut f32 {
        let r = root_of(&self.fused, b);
        match self.plan.offsets[r] {
            Some(off) => self.arena[off..].as_mut_ptr(),
            None => self.consts[&r].as_ptr() as *mut f32,
        }
    }

    fn len_of(&self, b: BufId) -> usize {
        numel(&self.fused.buffers[b].shape)
    }

    /// Runs the model. Inputs are matched by name and must have the compiled shapes
    /// (batch dimension included).
    pub fn run(
        &mut self,
        inputs: &[(&str, &ArrayD<f32>)],
    ) -> Result<Vec<(String, ArrayD<f32>)>, String> {
        for (name, b) in self.fused.inputs.clone() {
            let Some((_, x)) = inputs.iter().find(|(n, _)| *n == name) else {
                return Err(format!("missing input `{name}`"));
            };
            let want = &self.fused.buffers[b].shape;
            if x.shape() != want.as_slice() {
                return Err(format!(
                    "input `{name}` has shape {:?}, the model expects {:?}",
                    x.shape(),
                    want
                ));
            }
            let off = self.plan.offsets[b].expect("inputs live in the arena");
            let dst = &mut self.arena[off..off + x.len()];
            for (d, s) in dst.iter_mut().zip(x.iter()) {
                *d = *s;
            }
        }
        for i in 0..self.steps.len() {
            if let Some(times) = &mut self.times {
                let t = std::time::Instant::now();
                // The borrow of `times` ends before the step runs.
                let _ = times;
                self.step(i)?;
                if let Some(times) = &mut self.times {
                    times[i] += t.elapsed();
                }
            } else {
                self.step(i)?;
            }
        }
        let mut outs = Vec::new();
        for (name, b) in self.fused.outputs.clone() {
            let shape = self.fused.buffers[b].shape.clone();
            let n = self.len_of(b);
            let p = self.ptr(b);
            // SAFETY: the buffer holds n floats (arena slot or constant).
            let data = crate::budget::try_copy(
                unsafe { std::slice::from_raw_parts(p, n) }.iter().copied(),
                &format!("output `{name}`"),
            )?;
            outs.push((
                name,
                ArrayD::from_shape_vec(shape, data).map_err(|e| e.to_string())?,
            ));
        }
        Ok(outs)
    }

    fn step(&mut self, i: usize) -> Result<(), String> {
        let b = &self.bindings[i];
        let threads = self.pool.threads();
        match &self.steps[i] {
            Step::Loop(c) => run_loop(&self.pool, c, &b.fn_inputs, b.out, threads),
            Step::Contraction { kind, epilogue } => {
                let epi = epilogue.as_ref().map(|e| (&**e, &b.fn_inputs[..]));
                // A constant weight's Winograd transform is made once, on the first run.
                let weight = self.fused.kernels[i].inputs.get(1).copied();
                let constant = weight.is_some_and(|w| {
                    matches!(
                        self.fused.buffers[crate::plan::root_of(&self.fused, w)].kind,
                        BufKind::Const(_)
                    )
                });
                let cached = match winograd_forward(kind) {
                    Some(g) if constant => {
                        let u = self.wino_weights.entry(i).or_insert_with(|| {
                            let mut u = vec![0f32; g.weight_len()];
                            let at = winograd::WeightAt {
                                rs: 9 * g.c,
                                cs: 9,
                                flip: false,
                            };
                            // SAFETY: the whole weight (input 1) and U of g.weight_len() floats.
                            unsafe {
                                winograd::transform_weight(
                                    &g,
                                    b.ins[1].get(),
                                    at,
                                    u.as_mut_ptr(),
                                    0,
                                    g.o,
                                )
                            };
                            u
                        });
                        Some(P(u.as_mut_ptr()))
                    }
                    _ => None,
                };
                let done = self.contraction(kind, &b.ins, b.out, epi, b.post.as_ref(), cached);
                if let (Some(e), false) = (epilogue, done) {
                    // Epilogue input 0 is the raw result, in the output buffer itself.
                    run_loop(&self.pool, e, &b.fn_inputs, b.out, threads);
                }
            }
            Step::BackwardData { kind, epilogue } => {
                let epi = epilogue.as_ref().map(|e| (&**e, &b.fn_inputs[..]));
                let done = self.conv_backward_data(kind, &b.ins, b.out, epi);
                if let (Some(e), false) = (epilogue, done) {
                    // Epilogue input 0 is the raw gradient, in the output buffer itself.
                    run_loop(&self.pool, e, &b.fn_inputs, b.out, threads);
                }
            }
            Step::Host(HostOp::Conv2dBackwardWeight(kind)) => {
                self.conv_backward_weight(kind, &b.ins, b.out)
            }
            Step::Host(HostOp::PoolBackward { window: win, relu }) => {
                let k = &self.fused.kernels[i];
                let xs = self.fused.buffers[k.inputs[0]].shape.clone();
                let dys = self.fused.buffers[k.inputs[1]].shape.clone();
                let (nx, ndy) = (numel(&xs), numel(&dys));
                let (x, dy) = (b.ins[0], b.ins[1]);
                let (planes, plane) = (xs[0] * xs[1], xs[2] * xs[3]);
                self.par_rows((planes, plane), b.out, nx < SMALL_LOOP, &|range, dx| {
                    // SAFETY: x holds nx floats and dy ndy, read only.
                    let (xs_, dys_) = unsafe {
                        (
                            std::slice::from_raw_parts(x.get() as *const f32, nx),
                            std::slice::from_raw_parts(dy.get() as *const f32, ndy),
                        )
                    };
                    host::pool_backward_planes((win, *relu), xs_, &xs, dys_, &dys, dx, range);
                });
            }
            Step::Host(HostOp::MaxPool(win)) => {
                let k = &self.fused.kernels[i];
                let xs = self.fused.buffers[k.inputs[0]].shape.clone();
                let ys = self.fused.buffers[k.output].shape.clone();
                let nx = numel(&xs);
                let x = b.ins[0];
                let (planes, plane) = (xs[0] * xs[1], ys[2] * ys[3]);
                self.par_rows((planes, plane), b.out, nx < SMALL_LOOP, &|range, y| {
                    // SAFETY: x holds nx floats, read only.
                    let x_ = unsafe { std::slice::from_raw_parts(x.get() as *const f32, nx) };
                    host::max_pool_planes(win, (x_, &xs), (y, &ys), range);
                });
            }
            Step::Host(op @ (HostOp::Slice { .. } | HostOp::Pad { .. }))
                if self.len_of(self.fused.kernels[i].output) >= SMALL_LOOP =>
            {
                // Large slices and pads (of trained weights, in training) split their outer
                // rows across the threads: they are memory-bound.
                let k = &self.fused.kernels[i];
                let xs = self.fused.buffers[k.inputs[0]].shape.clone();
                let (nx, nout) = (numel(&xs), self.len_of(k.output));
                let args = match *op {
                    HostOp::Slice { axis, start, end } => (axis, start, end),
                    HostOp::Pad {
                        axis,
                        before,
                        after,
                    } => (axis, before, after),
                    _ => unreachable!(),
                };
                let axis = args.0;
                let outer: usize = xs[..axis].iter().product();
                let row = nout / outer.max(1);
                let x = b.ins[0];
                let slice = matches!(op, HostOp::Slice { .. });
                self.par_rows((outer, row), b.out, false, &|rows, o| {
                    // SAFETY: x holds nx floats, read only.
                    let xs_ = unsafe { std::slice::from_raw_parts(x.get() as *const f32, nx) };
                    if slice {
                        host::slice_rows(args, (xs_, &xs), o, rows);
                    } else {
                        host::pad_rows(args, (xs_, &xs), o, rows);
                    }
                });
            }
            Step::Host(h) => {
                let k = &self.fused.kernels[i];
                let mut views: Vec<(&[f32], &[usize])> = Vec::with_capacity(k.inputs.len());
                for (&buf, p) in k.inputs.iter().zip(&b.ins) {
                    // SAFETY: each input buffer holds len_of(buf) floats.
                    let s =
                        unsafe { std::slice::from_raw_parts(p.0 as *const f32, self.len_of(buf)) };
                    views.push((s, self.fused.buffers[buf].shape.as_slice()));
                }
                let n = self.len_of(k.output);
                // SAFETY: the output buffer holds n floats and does not overlap live inputs
                // (the planner never places buffers alive at the same time together).
                let o = unsafe { std::slice::from_raw_parts_mut(b.out.0, n) };
                host::run_host(
                    h,
                    &views,
                    o,
                    &self.fused.buffers[k.output].shape,
                    self.random_step,
                )?;
            }
        }
        Ok(())
    }

    /// Runs a contraction into `out`. A convolution applies the epilogue `post` as its
    /// product is stored; else, when its tasks each produce whole images, it applies the
    /// epilogue `epi` (its compiled kernel and input array) to each task's images right after
    /// computing them, while they are still in cache. Returns whether an epilogue ran.
    fn contraction(
        &self,
        kind: &ContractionKind,
        ins: &[P],
        out: P,
        epi: Option<(&CompiledKernel, &[P])>,
        post: Option<&post::PostOp>,
        transformed: Option<P>,
    ) -> bool {
        if let Some(g) = winograd_forward(kind) {
            let at = winograd::WeightAt {
                rs: 9 * g.c,
                cs: 9,
                flip: false,
            };
            return self.conv_winograd(&g, (ins[0], ins[1], at), out, epi, transformed);
        }
        match *kind {
            ContractionKind::Conv2d {
                n,
                c,
                o,
                groups,
                kernel,
                ..
            } => {
                let (oh_rows, ow) = contraction_out_size(kind);
                let ohw = oh_rows * ow;
                let macs = n * o * ohw * (c / groups) * kernel[0] * kernel[1];
                let threads = self.task_threads(macs < SMALL_MACS);
                // Small feature maps: several images per task; then split output channels too
                // when the batch alone cannot feed every thread.
                let per_task = contraction::images_per_task(kind, n, threads);
                let img_tasks = n.div_ceil(per_task);
                let splits = contraction::row_splits(kind, n, threads);
                let oblocks = if img_tasks * splits >= threads {
                    1
                } else {
                    threads.div_ceil(img_tasks).min(o)
                };
                let per = o.div_ceil(oblocks);
                let rows_per = oh_rows.div_ceil(splits);
                let (x, wt) = (ins[0], ins[1]);
                // The epilogue's outer index is the image: each task finishing whole images
                // (no channel or row split) runs it on them.
                let epi = ImageEpilogue::of(epi, n, n * o * ohw)
                    .filter(|_| splits == 1 && oblocks == 1 && post.is_none());
                self.par(img_tasks * splits * oblocks, macs < SMALL_MACS, &|t| {
                    let (it, rest) = (t / (splits * oblocks), t % (splits * oblocks));
                    let (sp, ob) = (rest / oblocks, rest % oblocks);
                    let imgs = it * per_task..((it + 1) * per_task).min(n);
                    let range = (ob * per, ((ob + 1) * per).min(o));
                    let rows = (splits > 1)
                        .then(|| (sp * rows_per, ((sp + 1) * rows_per).min(oh_rows)))
                        .filter(|(a, b)| a < b);
                    if splits > 1 && rows.is_none() {
                        return;
                    }
                    // SAFETY: the whole batch of x and out and the whole weight; tasks write
                    // disjoint (image, channel, row) blocks of out.
                    unsafe {
                        contraction::conv_images(
                            kind,
                            x.get(),
                            wt.get(),
                            out.get(),
                            imgs.clone(),
                            range,
                            rows,
                            post,
                        )
                    };
                    if let Some(e) = epi {
                        // SAFETY: this task's images are complete (all channels and rows) and
                        // no other task writes them.
                        unsafe { e.run(out, imgs) };
                    }
                });
                epi.is_some() || post.is_some()
            }
            ContractionKind::MatMul {
                batch,
                m,
                k,
                n,
                transpose_b,
            } => {
                let threads = self.task_threads(batch * m * n * k < SMALL_MACS);
                // Split the larger side: columns for dense layers (each thread then streams its
                // own half of the weight instead of all of it), rows for tall products.
                let by_rows = m > n;
                let span = if by_rows { m } else { n };
                let chunks = if batch >= threads {
                    1
                } else {
                    threads.min(span.max(1))
                };
                let per = span.div_ceil(chunks);
                let (a, b) = (ins[0], ins[1]);
                self.par(batch * chunks, batch * m * n * k < SMALL_MACS, &|t| {
                    let (bi, ch) = (t / chunks, t % chunks);
                    let (s0, s1) = (ch * per, ((ch + 1) * per).min(span));
                    if s0 >= s1 {
                        return;
                    }
                    let (r0, r1, c0, c1) = if by_rows {
                        (s0, s1, 0, n)
                    } else {
                        (0, m, s0, s1)
                    };
                    if transpose_b {
                        // SAFETY: batch bi, rows r0..r1 and columns c0..c1 of out; the
                        // matching rows of a and of b (b is [n, k]). Tasks write disjoint
                        // blocks of out.
                        unsafe {
                            contraction::gemm_nt(
                                r1 - r0,
                                c1 - c0,
                                k,
                                out.get().add(bi * m * n + r0 * n + c0),
                                n as isize,
                                a.get().add(bi * m * k + r0 * k),
                                b.get().add(bi * k * n + c0 * k),
                            )
                        };
                        return;
                    }
                    // SAFETY: batch bi, rows r0..r1 and columns c0..c1 of out; the matching
                    // rows of a and columns of b. Tasks write disjoint blocks of out.
                    unsafe {
                        contraction::gemm(
                            r1 - r0,
                            c1 - c0,
                            k,
                            out.get().add(bi * m * n + r0 * n + c0),
                            n as isize,
                            a.get().add(bi * m * k + r0 * k),
                            k as isize,
                            1,
                            b.get().add(bi * k * n + c0),
                            n as isize,
                            1,
                        )
                    };
                });
                false
            }
        }
    }

    /// A 3×3 stride-1 convolution in Winograd form ([`winograd`]): the weight `w` (read as
    /// `at` says) transformed once, split over output channels; then whole images per task
    /// (which also run the epilogue `epi` on them, as [`Self::contraction`]) or, with fewer
    /// images than threads, ranges of tiles. Returns whether the epilogue ran.
    fn conv_winograd(
        &self,
        g: &winograd::Wino,
        (x, w, at): (P, P, winograd::WeightAt),
        out: P,
        epi: Option<(&CompiledKernel, &[P])>,
        transformed: Option<P>,
    ) -> bool {
        let threads = self.pool.threads();
        WINO_WEIGHT.with(|buf| {
            let mut buf = buf.borrow_mut();
            let u = match transformed {
                // A constant weight transformed once (`Executable::step`).
                Some(u) => u,
                None => {
                    if buf.len() < g.weight_len() + 16 {
                        buf.resize(g.weight_len() + 16, 0.0);
                    }
                    // 64-byte aligned, so large transforms can stream whole lines.
                    let skew = buf.as_ptr().align_offset(64);
                    let u = P(buf[skew..].as_mut_ptr());
                    let per = g.o.div_ceil(threads);
                    self.par(threads, false, &|t| {
                        let (o0, o1) = ((t * per).min(g.o), ((t + 1) * per).min(g.o));
                        // SAFETY: the whole weight; tasks write disjoint output channels of U.
                        unsafe { winograd::transform_weight(g, w.get(), at, u.get(), o0, o1) };
                    });
                    u
                }
            };
            let epi =
                ImageEpilogue::of(epi, g.n, g.n * g.o * g.oh * g.ow).filter(|_| g.n >= threads);
            let img = g.image_tiles();
            // Whole images per task (with small maps, several, so a block has enough tiles
            // to pay for reading U), or, with fewer images than threads, tile ranges.
            let ipt = (g.block().div_ceil(img)).clamp(1, (g.n / threads).max(1));
            let all = g.n * img;
            let (tasks, per) = if g.n >= threads {
                (g.n.div_ceil(ipt), img * ipt)
            } else {
                // One range per thread: fewer, longer blocks (each reads all of U) measured
                // faster than two per thread (ResNet-18 b1 layer2: 330 -> 400 GFLOP/s).
                let tasks = threads.min(all.div_ceil(16));
                (tasks, all.div_ceil(tasks))
            };
            self.par(tasks, false, &|t| {
                let tiles = (t * per).min(all)..((t + 1) * per).min(all);
                // SAFETY: AVX-512F present (checked by the caller); the input batch, U and
                // the output batch; tasks write disjoint tiles of the output.
                unsafe { winograd::conv_tiles(g, x.get(), u.get(), out.get(), tiles.clone()) };
                if let Some(e) = epi {
                    // SAFETY: with whole images per task, this task's images are complete and
                    // no other task writes them.
                    unsafe { e.run(out, t * ipt..((t + 1) * ipt).min(g.n)) };
                }
            });
            epi.is_some()
        })
    }

    /// The weight gradient of a 3×3 stride-1 convolution in Winograd form: the output tiles
    /// are cut into chunks chosen from the shapes alone ([`split::chunks`]), each chunk's
    /// transformed products summed into its own buffer ([`winograd::weight_grad_tiles`],
    /// cut by output channels when there are fewer chunks than threads, which changes no
    /// sum); then the buffers are added in chunk order and transformed back, split over
    /// output channels. The result does not depend on the thread count.
    fn conv_backward_weight_winograd(&self, g: &winograd::Wino, (x, dy): (P, P), out: P) {
        let total = g.n * g.image_tiles();
        let len = g.weight_len();
        let threads = self.pool.threads();
        let chunks = split::chunks(total, g.xi() * g.o * g.c, len);
        let parts = split::parts(chunks.count, threads, g.o);
        let per_o = g.o.div_ceil(parts);
        WINO_PARTS.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < chunks.count * len {
                buf.resize(chunks.count * len, 0.0);
            }
            let bufs = P(buf.as_mut_ptr());
            self.par(chunks.count * parts, false, &|t| {
                let (k, p) = (t / parts, t % parts);
                let os = ((p * per_o).min(g.o), ((p + 1) * per_o).min(g.o));
                if os.0 < os.1 {
                    // SAFETY: AVX-512F present (checked by the caller); the batches of x and
                    // dy; each task writes its own output channels of its chunk's buffer.
                    unsafe {
                        winograd::weight_grad_tiles(
                            g,
                            x.get(),
                            dy.get(),
                            bufs.get().add(k * len),
                            chunks.range(k, total),
                            os,
                        )
                    };
                }
            });
            let ptrs: Vec<P> = (0..chunks.count)
                .map(|k| P(bufs.get().wrapping_add(k * len)))
                .collect();
            let per_o = g.o.div_ceil(threads);
            self.par(threads, false, &|t| {
                let (o0, o1) = ((t * per_o).min(g.o), ((t + 1) * per_o).min(g.o));
                let parts: Vec<*const f32> = ptrs.iter().map(|p| p.get() as *const f32).collect();
                // SAFETY: the buffers written above; tasks write disjoint output channels of
                // dw.
                unsafe { winograd::weight_grad_finish(g, &parts, out.get(), o0, o1) };
            });
        });
    }

    /// `dx = conv_backward_data(dy, w)`: images split across the pool, or, when the batch
    /// has few pixels in all (late small maps), input channels, so each thread reads only its
    /// part of the weight and still sees every image.
    /// `dx = conv_backward_data(dy, w)`; with `epi`, also its epilogue on the images a task
    /// completes where the pass splits images (Winograd, or GEMM + col2im per image). Returns
    /// whether the epilogue ran.
    fn conv_backward_data(
        &self,
        kind: &ContractionKind,
        ins: &[P],
        out: P,
        epi: Option<(&CompiledKernel, &[P])>,
    ) -> bool {
        let ContractionKind::Conv2d {
            n,
            c,
            h: ih,
            w: iw,
            groups,
            ..
        } = *kind
        else {
            unreachable!("a convolution")
        };
        let small = conv_macs(kind) < SMALL_MACS;
        let threads = self.task_threads(small);
        let (dy, w) = (ins[0], ins[1]);
        if let Some(g) = winograd_backward_data(kind) {
            let at = winograd::WeightAt {
                rs: 9,
                cs: 9 * c,
                flip: true,
            };
            return self.conv_winograd(&g, (dy, w, at), out, epi, None);
        }
        if groups == 1 && threads > 1 && c >= 2 * threads && n * conv_pixels(kind) < 1024 * threads
        {
            let per = c.div_ceil(threads);
            self.par(threads, small, &|t| {
                let (lo, hi) = (t * per, ((t + 1) * per).min(c));
                if lo < hi {
                    // SAFETY: whole batches of dy and dx, the whole weight; tasks write
                    // disjoint channels of dx.
                    unsafe {
                        contraction::conv_backward_data(
                            kind,
                            dy.get(),
                            w.get(),
                            out.get(),
                            0..n,
                            (lo, hi),
                        )
                    };
                }
            });
            return false;
        }
        let tasks = n.min(threads).max(1);
        let per = n.div_ceil(tasks);
        // The epilogue per task's images, while they are in cache.
        let epi = ImageEpilogue::of(epi, n, n * c * ih * iw);
        self.par(tasks, small, &|t| {
            let imgs = t * per..((t + 1) * per).min(n);
            // SAFETY: whole batches of dy and dx, the whole weight; tasks write disjoint
            // images of dx.
            unsafe {
                contraction::conv_backward_data(
                    kind,
                    dy.get(),
                    w.get(),
                    out.get(),
                    imgs.clone(),
                    (0, c),
                )
            };
            if let Some(e) = epi {
                // SAFETY: this task's images of dx are complete and no other task writes them.
                unsafe { e.run(out, imgs) };
            }
        });
        epi.is_some()
    }

    /// `dw = conv_backward_weight(x, dy)`: the images are cut into chunks chosen from the
    /// shapes alone ([`split::chunks`]); each chunk's sum goes to its own buffer (the first
    /// to `dw`) and the buffers are added in chunk order, so the result does not depend on
    /// the thread count. When there are fewer chunks than threads, each chunk's task is cut
    /// further by input channels (the columns of dw, so each packs only its own channels'
    /// im2col rows), or by output channels when there are few inputs: that changes no sum.
    fn conv_backward_weight(&self, kind: &ContractionKind, ins: &[P], out: P) {
        let ContractionKind::Conv2d {
            n,
            o,
            c,
            kernel,
            groups,
            ..
        } = *kind
        else {
            unreachable!("a convolution")
        };
        let len = o * (c / groups) * kernel[0] * kernel[1];
        let small = conv_macs(kind) < SMALL_MACS;
        let threads = self.task_threads(small);
        let (x, dy) = (ins[0], ins[1]);
        if let Some(g) = winograd_forward(kind) {
            self.conv_backward_weight_winograd(&g, (x, dy), out);
            return;
        }
        let chunks = split::chunks(n, conv_macs(kind) / n.max(1), len);
        let parts = if groups == 1 {
            split::parts(chunks.count, threads, c.max(o))
        } else {
            1
        };
        let inputs = c >= 2 * parts || o < parts;
        let total = if inputs { c } else { o };
        let per = total.div_ceil(parts);
        let mut partials = vec![0.0f32; len * (chunks.count - 1)];
        let part = P(partials.as_mut_ptr());
        self.par(chunks.count * parts, small, &|t| {
            let (k, p) = (t / parts, t % parts);
            let piece = ((p * per).min(total), ((p + 1) * per).min(total));
            if piece.0 >= piece.1 {
                return;
            }
            let (outs, ins) = match (parts, inputs) {
                (1, _) => ((0, o), (0, c / groups)),
                (_, true) => ((0, o), piece),
                (_, false) => (piece, (0, c)),
            };
            let dst = if k == 0 {
                out.get()
            } else {
                // SAFETY: partial k-1 is len floats inside `partials`.
                unsafe { part.get().add((k - 1) * len) }
            };
            // SAFETY: whole batches of x and dy; each task writes its own piece (rows or
            // columns) of its chunk's dw buffer.
            unsafe {
                contraction::conv_backward_weight(
                    kind,
                    x.get(),
                    dy.get(),
                    dst,
                    chunks.range(k, n),
                    outs,
                    ins,
                )
            };
        });
        // SAFETY: the output holds len floats.
        let dw = unsafe { std::slice::from_raw_parts_mut(out.get(), len) };
        for p in partials.chunks(len) {
            for (d, v) in dw.iter_mut().zip(p) {
                *d += v;
            }
        }
    }

    /// The threads to split work for: one when it is small (it then runs on this thread, and
    /// per-thread pieces done one after another would only be smaller products).
    fn task_threads(&self, small: bool) -> usize {
        if small { 1 } else { self.pool.threads() }
    }

    /// Runs `tasks` on the pool, or in order on this thread when the work is small.
    /// Splits `rows` rows of `row` floats of the output `out` across the pool (on the calling
    /// thread when `small`): `f` gets each task's row range and its rows of the output.
    fn par_rows(
        &self,
        (rows, row): (usize, usize),
        out: P,
        small: bool,
        f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
    ) {
        let tasks = rows.min(self.pool.threads()).max(1);
        let per = rows.div_ceil(tasks);
        self.par(tasks, small, &|t| {
            let range = (t * per).min(rows)..((t + 1) * per).min(rows);
            // SAFETY: the output holds rows·row floats; tasks get disjoint rows.
            let o = unsafe {
                std::slice::from_raw_parts_mut(out.get().add(range.start * row), range.len() * row)
            };
            f(range, o);
        });
    }

    fn par(&self, tasks: usize, small: bool, f: &(dyn Fn(usize) + Sync)) {
        if small {
            (0..tasks).for_each(f);
        } else {
            self.pool.run(tasks, f);
        }
    }
}

/// `k` without its leading size-1 dimensions (a batch of one), so that the outer dimension
/// the pool splits is the next one (the channels) instead of a single index that one thread
/// would run alone. Window kernels keep their rank; the output space keeps at least one
/// dimension. The output's layout is unchanged.
fn squeeze_outer(k: &LoopKernel) -> std::borrow::Cow<'_, LoopKernel> {
    let reduced = k.reduction.as_ref().map_or(0, |r| r.axes);
    let mut drop = 0;
    while k.window.is_none() && k.shape.len() - drop > reduced + 1 && k.shape[drop] == 1 {
        drop += 1;
    }
    if drop == 0 {
        return std::borrow::Cow::Borrowed(k);
    }
    let mut k = k.clone();
    k.shape.drain(..drop);
    for a in &mut k.accesses {
        a.strides.drain(..drop);
    }
    if let Some(r) = &mut k.reduction {
        for a in &mut r.epilogue_accesses {
            a.strides.drain(..drop);
        }
    }
    std::borrow::Cow::Owned(k)
}

/// Whether kernel `body` (a convolution's forward, backward-data or weight-gradient pass) runs
/// in Winograd form on this CPU.
pub fn winograd_runs(body: &KernelBody) -> bool {
    match body {
        KernelBody::Contraction(Contraction { kind, .. })
        | KernelBody::Host(HostOp::Conv2dBackwardWeight(kind)) => winograd_forward(kind).is_some(),
        KernelBody::Host(HostOp::Conv2dBackwardData(kind, _)) => {
            winograd_backward_data(kind).is_some()
        }
        _ => false,
    }
}

/// The Winograd geometry of a convolution whose forward pass and weight gradient run in that
/// form here: a 3×3 stride-1 one where it pays, on a CPU with AVX-512F.
fn winograd_forward(kind: &ContractionKind) -> Option<winograd::Wino> {
    winograd::Wino::of(kind).and_then(winograd_tile)
}

/// The images a convolution's task takes at once (for the memory estimate, [`crate::budget`]).
pub(crate) fn conv_images_per_task(kind: &ContractionKind, n: usize, threads: usize) -> usize {
    contraction::images_per_task(kind, n, threads)
}

/// The floats of a convolution's transformed weight when it runs in Winograd form (for the
/// memory estimate, [`crate::budget`]).
pub(crate) fn winograd_weight_len(kind: &ContractionKind) -> Option<usize> {
    winograd_forward(kind).map(|g| g.weight_len())
}

/// The Winograd form to run, if any: F(4×4, 3×3) where it pays, else F(2×2, 3×3) where that
/// does; only with AVX-512F.
fn winograd_tile(g: winograd::Wino) -> Option<winograd::Wino> {
    if !sgemm::available() {
        return None;
    }
    let g4 = g.with_tile(4);
    if g4.pays() {
        return Some(g4);
    }
    g.pays().then_some(g)
}

/// The backward-data pass of such a convolution as a forward one in Winograd form, when it
/// pays: `dy` convolved with the weight transposed and turned by 180°, padded by `2 - p` per
/// side (`Wino::of` takes paddings up to 2).
fn winograd_backward_data(kind: &ContractionKind) -> Option<winograd::Wino> {
    let ContractionKind::Conv2d {
        n, c, o, padding, ..
    } = *kind
    else {
        return None;
    };
    winograd::Wino::of(kind)?;
    let (oh, ow) = contraction_out_size(kind);
    winograd::Wino::of(&ContractionKind::Conv2d {
        n,
        c: o,
        h: oh,
        w: ow,
        o: c,
        kernel: [3, 3],
        stride: [1, 1],
        padding: padding.map(|p| 2 - p),
        dilation: [1, 1],
        groups: 1,
    })
    .and_then(|g| {
        winograd_tile(g).or_else(|| (g.pays_backward_data() && sgemm::available()).then_some(g))
    })
}

/// A convolution's output height and width.
pub(crate) fn contraction_out_size(kind: &ContractionKind) -> (usize, usize) {
    let ContractionKind::Conv2d {
        h,
        w,
        kernel,
        stride,
        padding,
        dilation,
        ..
    } = *kind
    else {
        unreachable!("a convolution")
    };
    (
        (h + padding[0] + padding[1] - dilation[0] * (kernel[0] - 1) - 1) / stride[0] + 1,
        (w + padding[2] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) / stride[1] + 1,
    )
}

/// Output pixels per image of a convolution.
fn conv_pixels(kind: &ContractionKind) -> usize {
    match kind {
        ContractionKind::Conv2d { .. } => {
            let (oh, ow) = contraction_out_size(kind);
            oh * ow
        }
        _ => 0,
    }
}

/// Multiply-adds of a convolution.
fn conv_macs(kind: &ContractionKind) -> usize {
    let ContractionKind::Conv2d {
        n,
        c,
        o,
        kernel,
        groups,
        ..
    } = *kind
    else {
        return 0;
    };
    n * o * conv_pixels(kind) * (c / groups) * kernel[0] * kernel[1]
}

thread_local! {
    /// Per-thread partial sums of a Winograd weight gradient, reused across calls.
    static WINO_PARTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The transformed weight of the current Winograd convolution, reused across calls.
    static WINO_WEIGHT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Contractions with fewer multiply-adds than this run on the calling thread.
const SMALL_MACS: usize = 1 << 20;

/// Below this much work (elements read and written) a kernel runs on the calling thread:
/// waking the pool costs more than it saves.
const SMALL_LOOP: usize = 1 << 15;

/// Runs a loop kernel over its outer dimension, split across the pool.
fn run_loop(pool: &Pool, c: &CompiledKernel, fn_inputs: &[P], out: P, threads: usize) {
    let outer = c.outer.max(1);
    let work: usize = c.output_len
        + c.input_extents
            .iter()
            .map(|&(lo, hi)| (hi - lo).max(0) as usize)
            .sum::<usize>();
    let chunks = if work < SMALL_LOOP {
        1
    } else {
        outer.min(threads * 4).max(1)
    };
    let per = outer.div_ceil(chunks);
    let ptrs = P(fn_inputs.as_ptr() as *mut f32);
    let func = c.func;
    pool.run(chunks, &|t| {
        let (b, e) = (t * per, ((t + 1) * per).min(outer));
        if b < e {
            let p = ptrs;
            // SAFETY: `P` is a transparent pointer, so `fn_inputs` is the pointer array the
            // code expects; the fused graph and plan guarantee each input buffer holds what
            // the kernel's accesses read and the output what it writes; chunks write disjoint
            // outer ranges.
            unsafe { func(p.get() as *const *const f32, out.get(), b, e) };
        }
    });
}
