//! Code generation: compiles a [`LoopKernel`] to native code with Cranelift.
//!
//! In: a kernel description from [`crate::fuse::kernel`]. Out: a [`CompiledKernel`] holding a
//! function pointer ([`KernelFn`]) plus its CLIF text and (when available) its disassembly.
//! [`Jit`] owns the Cranelift JIT module and caches compiled kernels by a canonical key (the
//! kernel's `Debug` text), so an equal kernel compiles once.
//!
//! # Calling convention
//!
//! ```text
//! unsafe extern "C" fn(inputs: *const *const f32, output: *mut f32, begin: usize, end: usize)
//! ```
//!
//! `inputs[i]` is the base pointer of kernel input `i`; an access reads
//! `inputs[a.input][a.offset + Σ idx_k * a.strides[k]]` (in elements). The output is dense,
//! row-major over the *output space*: the whole iteration space for plain and window kernels,
//! the leading (non-reduced) dimensions for reductions. A call computes only the outer indices
//! `begin..end` of dimension 0 of the output space (a rank-0 output space counts as `[1]`),
//! so a thread pool can split the work; `begin >= end` does nothing. The output may alias an
//! input only when that input is read at exactly the output's index (same dense layout).
//! [`CompiledKernel::run`] is a checked, safe wrapper over slices.
//!
//! # Semantics (the reference interpreter's, within the stated rounding)
//!
//! * Every program step is computed in f32. `Add`/`Sub`/`Mul`/`Div`/`Sqrt`/`Recip`/`Abs`/
//!   `Neg` are the native IEEE instructions, so they round exactly like the reference's
//!   "apply in f64, round to f32". `Rsqrt` is `1 / sqrt(x)` (two roundings, within 1.5 ulp).
//! * `Exp`, `Tanh` and `Sigmoid` are inline f32 polynomials, identical in scalar and f32x4
//!   code (Cephes `expf`/`tanhf`, FMA when the host has it; measured worst relative error
//!   about 2e-7). `Sigmoid` is `1 / (1 + e)` for `x >= 0` and `e / (1 + e)` below, with
//!   `e = exp(-|x|)`. `exp` above 88.72 is +inf, below ln(2^-150) ≈ -103.97 (where the true
//!   value rounds to 0) it is 0, subnormal results between carry no relative precision, NaN
//!   stays NaN.
//! * `Log` and `Pow` call Rust helpers evaluating [`UnaryOp::apply`]/[`BinaryOp::apply`] in
//!   f64 (vectors: one call per 4 lanes through a stack slot): exactly the reference's values.
//! * `Max`/`Min` are compare+select that propagate NaN from either operand (`torch.maximum`);
//!   `Relu` is `x < 0 ? 0 : x` (one compare; NaN and -0 stay, as PyTorch's). NaN is never
//!   dropped, so a NaN weight behind a ReLU or a max reaches the loss. `Greater` is
//!   `a > b ? 1 : 0`; `Select(c, a, b)` is `c != 0 ? a : b` (NaN counts as nonzero).
//! * Reductions combine the program's last step over the trailing `axes` dims in f32 (Sum and
//!   Mean add, Max propagates NaN), then Mean divides by the element count, then the epilogue runs
//!   with `Scalar::Reduced` = that value and its loads indexed by the leading dims through
//!   `epilogue_accesses`. When the innermost reduced dim is vectorized the sum is taken in 4
//!   interleaved partial sums (so it may differ from a strictly sequential f32 sum by
//!   rounding). An empty epilogue stores the reduced value. Further results
//!   (`Reduction::more`) reduce other steps of the same program in the same pass, each with
//!   its own epilogue; their output pointers follow the inputs in the pointer array.
//! * Windows (pooling over the last two output dims `[.., OH, OW]`): the program describes
//!   the value pooled per window cell (normally just `[Load(0)]`). *Every* access is read at
//!   the cell: its leading strides index the leading output dims and its last two strides
//!   index the input row `h` and column `w` (`h = oh * stride_h - pad_top + kh * dil_h`, same
//!   for `w`). Cells outside `[0, H) x [0, W)` are skipped. Max pools with `-inf` as the
//!   identity, NaN if a cell is NaN. Avg sums the cells and divides like PyTorch's `avg_pool2d`:
//!   `pool = (min(hs+kh, H+pad_bottom) - hs) * (min(ws+kw, W+pad_right) - ws)` before
//!   clipping; divisor `pool` with `count_include_pad`, else the clipped area. Avg requires
//!   dilation 1.
//!
//! # Code shape
//!
//! Dims are merged where every stream (each access and the output) is contiguous across
//! them (dim 0 too: `begin/end` are scaled), size-1 dims are dropped. The innermost loop is
//! vectorized with f32x4 (plus a scalar tail loop) when every access's innermost stride is 0 or
//! 1; loads with stride 0 there and all program steps depending only on them and on constants
//! are hoisted out of the innermost loop. Window kernels are scalar. A vectorized loop whose
//! enclosing dim has a known extent (two images of a reduction, two channels of an elementwise
//! kernel) runs two of that dim's indices per pass, so every stream is read at two places at
//! once: the prefetchers serve two streams per core faster than one (batchnorm's statistics
//! 16 -> 24 GB/s). Sums then add the two points' values before accumulating them.
//!
//! [`Jit::new`] compiles at Cranelift's `speed` level: for these loops it produces the same
//! innermost loop as `none` for simple kernels (memory-bound either way) and is a little faster
//! for long programs (it hoists constants, spilling some of them), at about the same compile
//! time (~0.5 ms per kernel). [`Jit::with_opt_level`] selects `none`.

mod emit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cranelift_codegen::Context;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use crate::fuse::kernel::{Access, LoopKernel, Scalar};
use crate::graph::{BinaryOp, UnaryOp};

/// A compiled kernel: see the module doc for the calling convention.
pub type KernelFn =
    unsafe extern "C" fn(inputs: *const *const f32, output: *mut f32, begin: usize, end: usize);

/// A compiled kernel, its code and what [`CompiledKernel::run`] needs to check a call.
#[derive(Debug)]
pub struct CompiledKernel {
    pub func: KernelFn,
    /// The function's CLIF, as generated (before Cranelift's optimizations).
    pub clif: String,
    /// Cranelift's disassembly of the machine code (VCode with registers).
    pub asm: Option<String>,
    pub compile_time: Duration,
    /// Whether the innermost loop runs on f32x4 vectors.
    pub vectorized: bool,
    /// Size of dimension 0 of the output space (the range `begin..end` splits).
    pub outer: usize,
    /// Number of output elements.
    pub output_len: usize,
    pub num_inputs: usize,
    /// Outputs besides the main one (a reduction's further results), each `output_len`
    /// elements.
    pub more_outputs: usize,
    /// Per input: the smallest and one past the largest element index read (`(0, 0)` if the
    /// input is never read).
    pub input_extents: Vec<(isize, isize)>,
}

impl CompiledKernel {
    /// Runs outer indices `begin..end`, checking that every read and write stays inside the
    /// given slices.
    pub fn run(
        &self,
        inputs: &[&[f32]],
        output: &mut [f32],
        begin: usize,
        end: usize,
    ) -> Result<(), String> {
        self.run_all(inputs, &mut [output], begin, end)
    }

    /// [`Self::run`] for a kernel with further outputs: `outputs` is the main output, then
    /// one per further result.
    pub fn run_all(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        begin: usize,
        end: usize,
    ) -> Result<(), String> {
        if outputs.len() != 1 + self.more_outputs {
            return Err(format!(
                "expected {} outputs, got {}",
                1 + self.more_outputs,
                outputs.len()
            ));
        }
        if inputs.len() != self.num_inputs {
            return Err(format!(
                "expected {} inputs, got {}",
                self.num_inputs,
                inputs.len()
            ));
        }
        for (i, (input, &(lo, hi))) in inputs.iter().zip(&self.input_extents).enumerate() {
            if hi > lo && (lo < 0 || hi as usize > input.len()) {
                return Err(format!(
                    "input {i} has {} elements, the kernel reads {lo}..{hi}",
                    input.len()
                ));
            }
        }
        for output in outputs.iter() {
            if output.len() < self.output_len {
                return Err(format!(
                    "output has {} elements, the kernel writes {}",
                    output.len(),
                    self.output_len
                ));
            }
        }
        if begin > end || end > self.outer {
            return Err(format!("range {begin}..{end} outside 0..{}", self.outer));
        }
        // The further outputs' pointers follow the inputs'.
        let ptrs: Vec<*const f32> = inputs
            .iter()
            .map(|s| s.as_ptr())
            .chain(
                outputs[1..]
                    .iter_mut()
                    .map(|s| s.as_mut_ptr() as *const f32),
            )
            .collect();
        // SAFETY: the compiled code reads input `i` only at element indices inside
        // `input_extents[i]` (computed from the same accesses the code was generated from),
        // which we just checked lie inside the slices; it writes output elements of outer
        // indices `begin..end` only, all below `output_len <= output.len()`. The slices are
        // borrowed for the whole call and the outputs are exclusive, so nothing aliases the
        // writes.
        unsafe { (self.func)(ptrs.as_ptr(), outputs[0].as_mut_ptr(), begin, end) };
        Ok(())
    }
}

/// Cranelift optimization level for [`Jit::with_opt_level`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptLevel {
    None,
    Speed,
}

/// The JIT: owns the Cranelift module (whose code memory is never freed, so function pointers
/// stay valid for the life of the process) and the kernel cache.
pub struct Jit {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    cache: HashMap<String, Arc<CompiledKernel>>,
    next_id: usize,
}

/// The helpers compiled code may call: `(name, address)`.
fn helper_symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("netc_log", helpers::log as *const u8),
        ("netc_pow", helpers::pow as *const u8),
        ("netc_log4", helpers::log4 as *const u8),
        ("netc_pow4", helpers::pow4 as *const u8),
    ]
}

impl Jit {
    /// A JIT for the host CPU at the default optimization level.
    pub fn new() -> Result<Jit, String> {
        Self::with_opt_level(OptLevel::Speed)
    }

    pub fn with_opt_level(level: OptLevel) -> Result<Jit, String> {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v)
                .map_err(|e| format!("cranelift setting {k}={v}: {e}"))
        };
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        let level = match level {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        };
        set(&mut flags, "opt_level", level)?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("host machine not supported: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| format!("cranelift ISA: {e}"))?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        for (name, ptr) in helper_symbols() {
            builder.symbol(name, ptr);
        }
        let module = JITModule::new(builder);
        let ctx = module.make_context();
        Ok(Jit {
            module,
            ctx,
            fctx: FunctionBuilderContext::new(),
            cache: HashMap::new(),
            next_id: 0,
        })
    }

    /// Number of distinct kernels compiled so far.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Compiles `k` (or returns the cached compilation of an equal kernel).
    pub fn compile(&mut self, k: &LoopKernel) -> Result<Arc<CompiledKernel>, String> {
        let key = format!("{k:?}");
        if let Some(c) = self.cache.get(&key) {
            return Ok(c.clone());
        }
        validate(k)?;
        let start = Instant::now();
        let name = format!("netc_kernel_{}", self.next_id);
        self.next_id += 1;
        let sig = emit::kernel_signature(&self.module);
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| format!("declare {name}: {e}"))?;
        self.module.clear_context(&mut self.ctx);
        self.ctx.func.signature = sig;
        let vectorized = emit::build(&mut self.module, &mut self.ctx.func, &mut self.fctx, k)?;
        let clif = self.ctx.func.display().to_string();
        self.ctx.set_disasm(true);
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| format!("compile {name}: {e:?}\n{clif}"))?;
        let asm = self.ctx.compiled_code().and_then(|c| c.vcode.clone());
        self.module.clear_context(&mut self.ctx);
        self.module
            .finalize_definitions()
            .map_err(|e| format!("finalize {name}: {e}"))?;
        let ptr = self.module.get_finalized_function(id);
        // SAFETY: `ptr` is the finalized code of a function declared with
        // `emit::kernel_signature`: four pointer-sized integer parameters, no results, the
        // platform's default (C) calling convention — exactly `KernelFn`'s ABI.
        let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        let (outer, output_len) = output_space(k);
        let compiled = Arc::new(CompiledKernel {
            func,
            clif,
            asm,
            compile_time: start.elapsed(),
            vectorized,
            outer,
            output_len,
            num_inputs: k.num_inputs,
            more_outputs: k.reduction.as_ref().map_or(0, |r| r.more.len()),
            input_extents: input_extents(k),
        });
        self.cache.insert(key, compiled.clone());
        Ok(compiled)
    }
}

/// The output space's dim 0 (1 for rank 0) and element count.
fn output_space(k: &LoopKernel) -> (usize, usize) {
    let dims = match &k.reduction {
        Some(r) => &k.shape[..k.shape.len() - r.axes],
        None => &k.shape[..],
    };
    (dims.first().copied().unwrap_or(1), dims.iter().product())
}

/// Per input, the range of element indices the kernel may read.
fn input_extents(k: &LoopKernel) -> Vec<(isize, isize)> {
    let mut ext: Vec<Option<(isize, isize)>> = vec![None; k.num_inputs];
    if k.shape.contains(&0) {
        return vec![(0, 0); k.num_inputs];
    }
    let mut add = |a: &Access, dims: &[usize]| {
        let (mut lo, mut hi) = (a.offset, a.offset);
        for (&s, &n) in a.strides.iter().zip(dims) {
            let span = s * (n as isize - 1);
            lo += span.min(0);
            hi += span.max(0);
        }
        let e = ext[a.input].get_or_insert((lo, hi + 1));
        *e = (e.0.min(lo), e.1.max(hi + 1));
    };
    let mut dims = k.shape.clone();
    if let Some(w) = &k.window {
        let r = dims.len();
        dims[r - 2] = w.in_hw[0];
        dims[r - 1] = w.in_hw[1];
    }
    for a in &k.accesses {
        add(a, &dims);
    }
    if let Some(r) = &k.reduction {
        for a in &r.epilogue_accesses {
            add(a, &k.shape[..k.shape.len() - r.axes]);
        }
    }
    ext.into_iter().map(|e| e.unwrap_or((0, 0))).collect()
}

/// Rejects kernels the code generator cannot compile (malformed programs, bad ranks).
fn validate(k: &LoopKernel) -> Result<(), String> {
    let rank = k.shape.len();
    let check_accesses = |acc: &[Access], r: usize, what: &str| -> Result<(), String> {
        for (i, a) in acc.iter().enumerate() {
            if a.input >= k.num_inputs {
                return Err(format!(
                    "{what} {i} reads input {} of {}",
                    a.input, k.num_inputs
                ));
            }
            if a.strides.len() != r {
                return Err(format!(
                    "{what} {i} has {} strides, needs {r}",
                    a.strides.len()
                ));
            }
        }
        Ok(())
    };
    let check_prog = |p: &[Scalar], naccess: usize, reduced_ok: bool| -> Result<(), String> {
        if p.is_empty() {
            return Err("empty program".into());
        }
        for (i, s) in p.iter().enumerate() {
            let ok = match *s {
                Scalar::Load(a) => a < naccess,
                Scalar::Const(_) => true,
                Scalar::Unary(_, x) => x < i,
                Scalar::Binary(_, x, y) => x < i && y < i,
                Scalar::Select(c, x, y) => c < i && x < i && y < i,
                Scalar::Reduced => reduced_ok,
            };
            if !ok {
                return Err(format!("bad program step {i}: {s:?}"));
            }
        }
        Ok(())
    };
    if k.reduction.is_some() && k.window.is_some() {
        return Err("a kernel cannot both reduce and pool".into());
    }
    check_accesses(&k.accesses, rank, "access")?;
    check_prog(&k.program, k.accesses.len(), false)?;
    if let Some(r) = &k.reduction {
        if r.axes > rank {
            return Err(format!(
                "reduction over {} axes of a rank-{rank} space",
                r.axes
            ));
        }
        check_accesses(&r.epilogue_accesses, rank - r.axes, "epilogue access")?;
        if !r.epilogue.is_empty() {
            check_prog(&r.epilogue, r.epilogue_accesses.len(), true)?;
        }
        for (i, m) in r.more.iter().enumerate() {
            if m.step >= k.program.len() {
                return Err(format!(
                    "further result {i} reduces step {} of {}",
                    m.step,
                    k.program.len()
                ));
            }
            if !m.epilogue.is_empty() {
                check_prog(&m.epilogue, r.epilogue_accesses.len(), true)?;
            }
        }
    }
    if let Some(w) = &k.window {
        if rank < 2 {
            return Err("a window kernel needs rank >= 2".into());
        }
        if w.kernel.contains(&0) || w.stride.contains(&0) || w.dilation.contains(&0) {
            return Err("window kernel, stride and dilation must be positive".into());
        }
        if !w.max && w.dilation != [1, 1] {
            return Err("average pooling requires dilation 1".into());
        }
        if k.accesses.is_empty() {
            return Err("a window kernel needs access 0".into());
        }
    }
    let big = |n: usize| n > (i32::MAX as usize);
    if k.shape.iter().any(|&n| big(n)) {
        return Err("dimension too large".into());
    }
    Ok(())
}

/// Out-of-line math called by compiled code: each evaluates the op's f64 definition.
mod helpers {
    use super::{BinaryOp, UnaryOp};

    pub extern "C" fn log(x: f32) -> f32 {
        UnaryOp::Log.apply(f64::from(x)) as f32
    }
    pub extern "C" fn pow(a: f32, b: f32) -> f32 {
        BinaryOp::Pow.apply(f64::from(a), f64::from(b)) as f32
    }

    /// Applies `f` to 4 floats in place.
    ///
    /// # Safety
    /// `p` must point to 4 writable, initialized f32 (compiled code passes a 16-byte stack
    /// slot).
    unsafe fn map4(p: *mut f32, f: extern "C" fn(f32) -> f32) {
        // SAFETY: guaranteed by the caller.
        let v = unsafe { &mut *(p as *mut [f32; 4]) };
        for x in v {
            *x = f(*x);
        }
    }

    /// # Safety
    /// `p` points to 4 writable f32.
    pub unsafe extern "C" fn log4(p: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { map4(p, log) }
    }
    /// `a[i] = a[i] ^ b[i]` for 4 lanes.
    ///
    /// # Safety
    /// `a` points to 4 writable f32 and `b` to 4 readable f32, not overlapping.
    pub unsafe extern "C" fn pow4(a: *mut f32, b: *const f32) {
        // SAFETY: guaranteed by the caller.
        let (a, b) = unsafe { (&mut *(a as *mut [f32; 4]), &*(b as *const [f32; 4])) };
        for (x, y) in a.iter_mut().zip(b) {
            *x = pow(*x, *y);
        }
    }
}
