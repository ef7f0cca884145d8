//! CLIF generation for one [`LoopKernel`]: loop nests, the vectorized innermost loop, the
//! scalar program, reductions and pooling windows. See the parent module for the contract.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, FuncRef, Function, InstBuilder, MemFlagsData, Signature,
    StackSlot, StackSlotData, StackSlotKind, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

use crate::fuse::kernel::{Access, LoopKernel, Reduction, Scalar, Window};
use crate::graph::{BinaryOp, ReduceOp, UnaryOp};

/// `(inputs, output, begin, end)`, all pointer-sized, no results.
pub(super) fn kernel_signature(m: &JITModule) -> Signature {
    let mut sig = m.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// Scalar (`f32`) or 4-lane vector (`f32x4`) code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    S,
    V,
}

impl Mode {
    fn ty(self) -> Type {
        match self {
            Mode::S => F32,
            Mode::V => F32X4,
        }
    }
}

/// One loop dimension: its extent and, per stream (accesses, then the output...), its
/// stride in elements.
#[derive(Debug, Clone)]
struct Dim {
    n: usize,
    s: Vec<i64>,
}

/// Drops size-1 dims and merges adjacent dims that every stream walks contiguously. With
/// `keep_first`, dim 0 survives (it is the `begin..end` dim) and the returned factor is how
/// many merged indices one original dim-0 index spans. Never returns an empty list.
fn simplify(dims: Vec<Dim>, keep_first: bool, nstreams: usize) -> (Vec<Dim>, i64) {
    let mut it = dims.into_iter();
    let mut out: Vec<Dim> = Vec::new();
    if keep_first && let Some(d) = it.next() {
        out.push(d);
    }
    let mut factor = 1i64;
    for d in it.filter(|d| d.n != 1) {
        let only_first = out.len() == 1;
        match out.last_mut() {
            Some(last)
                if last.n == 1 || last.s.iter().zip(&d.s).all(|(&a, &b)| a == b * d.n as i64) =>
            {
                if only_first && keep_first {
                    factor *= d.n as i64;
                }
                last.n *= d.n;
                last.s = d.s;
            }
            _ => out.push(d),
        }
    }
    if out.is_empty() {
        out.push(Dim {
            n: 1,
            s: vec![0; nstreams],
        });
    }
    (out, factor)
}

/// Steps the last step depends on.
fn live_steps(prog: &[Scalar]) -> Vec<bool> {
    live_from(prog, &[prog.len().saturating_sub(1)])
}

/// Steps the steps `roots` depend on (and those steps).
fn live_from(prog: &[Scalar], roots: &[usize]) -> Vec<bool> {
    let mut live = vec![false; prog.len()];
    for &r in roots {
        if let Some(l) = live.get_mut(r) {
            *l = true;
        }
    }
    for i in (0..prog.len()).rev() {
        if !live[i] {
            continue;
        }
        match prog[i] {
            Scalar::Unary(_, x) => live[x] = true,
            Scalar::Binary(_, x, y) => {
                live[x] = true;
                live[y] = true;
            }
            Scalar::Select(c, x, y) => {
                live[c] = true;
                live[x] = true;
                live[y] = true;
            }
            Scalar::Load(_) | Scalar::Const(_) | Scalar::Reduced => {}
        }
    }
    live
}

/// Steps whose value does not change along a loop in which access `a` is invariant when
/// `inv_access(a)`.
fn invariant_steps(prog: &[Scalar], inv_access: &dyn Fn(usize) -> bool) -> Vec<bool> {
    let mut inv = vec![false; prog.len()];
    for i in 0..prog.len() {
        inv[i] = match prog[i] {
            Scalar::Load(a) => inv_access(a),
            Scalar::Const(_) => true,
            Scalar::Unary(_, x) => inv[x],
            Scalar::Binary(_, x, y) => inv[x] && inv[y],
            Scalar::Select(c, x, y) => inv[c] && inv[x] && inv[y],
            Scalar::Reduced => false,
        };
    }
    inv
}

/// Out-of-line helpers: `(name, operands, scalar)`; scalar ones take and return f32, vector
/// ones take pointers to 4-float stack slots and write the result over the first.
const HELPERS: [(&str, usize, bool); 4] = [
    ("netc_log", 1, true),
    ("netc_pow", 2, true),
    ("netc_log4", 1, false),
    ("netc_pow4", 2, false),
];

type LoadFn<'c> = dyn FnMut(&mut Em, usize) -> Value + 'c;
type BodyFn<'c> = dyn FnMut(&mut Em, Value, Vec<Value>) -> Vec<Value> + 'c;
/// Per point of an innermost loop: `(mode, index, values, carried) -> carried`, `values` those
/// of the steps the loop was asked for (`outs`).
type FinFn<'c> = dyn FnMut(&mut Em, Mode, Value, Vec<Value>, Vec<Value>) -> Vec<Value> + 'c;

struct Em<'f> {
    b: FunctionBuilder<'f>,
    helper_ids: HashMap<&'static str, FuncId>,
    helper_refs: HashMap<&'static str, FuncRef>,
    slots: Vec<StackSlot>,
    /// Data accesses: may be unaligned, never trap (the caller guarantees the bounds).
    fl: MemFlagsData,
    /// The module the helpers are declared in (to import them into this function).
    module: &'f mut JITModule,
    /// Whether the host ISA has FMA (used inside the inline math functions only).
    has_fma: bool,
}

/// Builds `func` (whose signature is set) for `k`; returns whether it vectorized.
pub(super) fn build(
    module: &mut JITModule,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    k: &LoopKernel,
) -> Result<bool, String> {
    let mut helper_ids = HashMap::new();
    for (name, nargs, scalar) in HELPERS {
        let mut sig = module.make_signature();
        if scalar {
            for _ in 0..nargs {
                sig.params.push(AbiParam::new(F32));
            }
            sig.returns.push(AbiParam::new(F32));
        } else {
            for _ in 0..nargs {
                sig.params.push(AbiParam::new(I64));
            }
        }
        let id = module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| format!("declare {name}: {e}"))?;
        helper_ids.insert(name, id);
    }
    let config = module.target_config();
    let has_fma = module
        .isa()
        .isa_flags()
        .iter()
        .any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    let mut em = Em {
        b: FunctionBuilder::new(func, fctx),
        helper_ids,
        helper_refs: HashMap::new(),
        slots: Vec::new(),
        fl: MemFlagsData::new().with_notrap(),
        module,
        has_fma,
    };
    let vectorized = em.kernel(k);
    em.b.seal_all_blocks();
    em.b.finalize(config);
    Ok(vectorized)
}

/// Pointers loaded at function entry.
struct Ptrs {
    /// Per access of the main program.
    acc: Vec<Value>,
    /// Per epilogue access.
    epi: Vec<Value>,
    out: Value,
    /// The extra outputs of a reduction's further results ([`Reduction::more`]), passed after
    /// the inputs in the pointer array.
    more_out: Vec<Value>,
}

impl Em<'_> {
    fn kernel(&mut self, k: &LoopKernel) -> bool {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (inputs, out, begin, end) = (params[0], params[1], params[2], params[3]);
        if k.shape.contains(&0) {
            self.b.ins().return_(&[]);
            return false;
        }
        let ret = self.b.create_block();
        let body = self.b.create_block();
        let c = self.b.ins().icmp(IntCC::UnsignedLessThan, begin, end);
        self.b.ins().brif(c, body, &[], ret, &[]);
        self.b.switch_to_block(ret);
        self.b.ins().return_(&[]);
        self.b.switch_to_block(body);

        let mut by_input: HashMap<usize, Value> = HashMap::new();
        let mut ptr = |em: &mut Em, a: &Access| {
            *by_input.entry(a.input).or_insert_with(|| {
                em.b.ins()
                    .load(I64, MemFlagsData::trusted(), inputs, (a.input * 8) as i32)
            })
        };
        let acc = k.accesses.iter().map(|a| ptr(self, a)).collect();
        let epi = match &k.reduction {
            Some(r) => r.epilogue_accesses.iter().map(|a| ptr(self, a)).collect(),
            None => Vec::new(),
        };
        let more_out = match &k.reduction {
            Some(r) => (0..r.more.len())
                .map(|i| {
                    let at = ((k.num_inputs + i) * 8) as i32;
                    self.b.ins().load(I64, MemFlagsData::trusted(), inputs, at)
                })
                .collect(),
            None => Vec::new(),
        };
        let ptrs = Ptrs {
            acc,
            epi,
            out,
            more_out,
        };
        let vectorized = match (&k.reduction, &k.window) {
            (Some(r), _) => self.reduction(k, r, &ptrs, begin, end),
            (None, Some(w)) => {
                self.window(k, w, &ptrs, begin, end);
                false
            }
            (None, None) => self.plain(k, &ptrs, begin, end),
        };
        self.b.ins().jump(ret, &[]);
        vectorized
    }

    // ---- small helpers ----

    fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    fn fconst(&mut self, m: Mode, c: f32) -> Value {
        let s = self.b.ins().f32const(c);
        match m {
            Mode::S => s,
            Mode::V => self.b.ins().splat(F32X4, s),
        }
    }

    /// `cond ? t : f` for a comparison result `cond` of mode `m`.
    fn pick(&mut self, m: Mode, cond: Value, t: Value, f: Value) -> Value {
        match m {
            Mode::S => self.b.ins().select(cond, t, f),
            Mode::V => {
                let fl = MemFlagsData::new().with_endianness(Endianness::Little);
                let mask = self.b.ins().bitcast(F32X4, fl, cond);
                self.b.ins().bitselect(mask, t, f)
            }
        }
    }

    /// `b < a || a is NaN ? a : b`: the larger operand, NaN if either is NaN
    /// (`torch.maximum`; a bare `maxps` would drop a NaN `a`).
    fn max(&mut self, m: Mode, a: Value, b: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, b, a);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let c = self.b.ins().bor(c, nan);
        self.pick(m, c, a, b)
    }

    /// `a < b || a is NaN ? a : b`: the smaller operand, NaN if either is NaN.
    fn min(&mut self, m: Mode, a: Value, b: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let c = self.b.ins().bor(c, nan);
        self.pick(m, c, a, b)
    }

    /// `x < c ? c : x` for a constant `c` (a clamp from below whose NaN input stays NaN).
    fn clamp_lo(&mut self, m: Mode, x: Value, c: f32) -> Value {
        let cv = self.fconst(m, c);
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, cv);
        self.pick(m, below, cv, x)
    }

    /// `c < x ? c : x` for a constant `c` (a clamp from above whose NaN input stays NaN).
    fn clamp_hi(&mut self, m: Mode, x: Value, c: f32) -> Value {
        let cv = self.fconst(m, c);
        let above = self.b.ins().fcmp(FloatCC::LessThan, cv, x);
        self.pick(m, above, cv, x)
    }

    fn func_ref(&mut self, name: &'static str) -> FuncRef {
        if let Some(&f) = self.helper_refs.get(name) {
            return f;
        }
        let id = self.helper_ids[name];
        let f = self.module.declare_func_in_func(id, self.b.func);
        self.helper_refs.insert(name, f);
        f
    }

    fn slot(&mut self, i: usize) -> StackSlot {
        while self.slots.len() <= i {
            let s = self.b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                16,
                4,
            ));
            self.slots.push(s);
        }
        self.slots[i]
    }

    /// Calls a helper on one or two operands: scalars directly, vectors through stack slots.
    fn call(&mut self, m: Mode, name: &'static str, args: &[Value]) -> Value {
        match m {
            Mode::S => {
                let f = self.func_ref(name);
                let inst = self.b.ins().call(f, args);
                self.b.inst_results(inst)[0]
            }
            Mode::V => {
                let name4 = match name {
                    "netc_log" => "netc_log4",
                    _ => "netc_pow4",
                };
                let f = self.func_ref(name4);
                let mut addrs = Vec::new();
                for (i, &a) in args.iter().enumerate() {
                    let s = self.slot(i);
                    self.b.ins().stack_store(I64, a, s, 0);
                    addrs.push(self.b.ins().stack_addr(I64, s, 0));
                }
                self.b.ins().call(f, &addrs);
                let s = self.slot(0);
                self.b.ins().stack_load(I64, F32X4, s, 0)
            }
        }
    }

    fn unary(&mut self, m: Mode, op: UnaryOp, x: Value) -> Value {
        match op {
            UnaryOp::Neg => self.b.ins().fneg(x),
            UnaryOp::Abs => self.b.ins().fabs(x),
            UnaryOp::Detach => x,
            UnaryOp::Sqrt => self.b.ins().sqrt(x),
            // `x < 0 ? 0 : x`: one compare as before, and NaN and -0 stay (PyTorch's relu).
            UnaryOp::Relu => self.clamp_lo(m, x, 0.0),
            UnaryOp::Rsqrt => {
                let s = self.b.ins().sqrt(x);
                let one = self.fconst(m, 1.0);
                self.b.ins().fdiv(one, s)
            }
            UnaryOp::Recip => {
                let one = self.fconst(m, 1.0);
                self.b.ins().fdiv(one, x)
            }
            UnaryOp::Exp => self.exp(m, x),
            UnaryOp::Log => self.call(m, "netc_log", &[x]),
            UnaryOp::Tanh => self.tanh(m, x),
            UnaryOp::Sigmoid => {
                // With e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) below, so that
                // exp's relative error carries over on both sides.
                let ax = self.b.ins().fabs(x);
                let n = self.b.ins().fneg(ax);
                let e = self.exp(m, n);
                let one = self.fconst(m, 1.0);
                let d = self.b.ins().fadd(one, e);
                let q = self.b.ins().fdiv(one, d);
                let eq = self.b.ins().fmul(e, q);
                let zero = self.fconst(m, 0.0);
                let neg = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                self.pick(m, neg, eq, q)
            }
        }
    }

    /// `c0 + x * (c1 + x * (...))` (coefficients from the highest degree down).
    fn horner(&mut self, m: Mode, x: Value, coeffs: &[f32]) -> Value {
        let mut p = self.fconst(m, coeffs[0]);
        for &c in &coeffs[1..] {
            let c = self.fconst(m, c);
            p = self.fma(p, x, c);
        }
        p
    }

    /// `a * b + c`, fused when the host has FMA (else two roundings).
    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.has_fma {
            self.b.ins().fma(a, b, c)
        } else {
            let t = self.b.ins().fmul(a, b);
            self.b.ins().fadd(t, c)
        }
    }

    /// An integer constant of the lane type matching mode `m`'s floats.
    fn i32const(&mut self, m: Mode, c: i32) -> Value {
        let s = self.b.ins().iconst(I32, i64::from(c));
        match m {
            Mode::S => s,
            Mode::V => self.b.ins().splat(I32X4, s),
        }
    }

    /// `2^n` for integer lanes `n` in `-126..=127`, as floats.
    fn pow2(&mut self, m: Mode, n: Value) -> Value {
        let bias = self.i32const(m, 127);
        let e = self.b.ins().iadd(n, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        let fl = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(m.ty(), fl, e)
    }

    /// `exp(x)` inline (Cephes `expf`: range reduction by `ln 2`, degree-5 polynomial; about
    /// 2e-7 relative error). Overflow gives +inf, NaN stays NaN, results below ~1e-45 are 0.
    fn exp(&mut self, m: Mode, x: Value) -> Value {
        /// `ln(2^-150)`: below it `exp` rounds to 0 in f32.
        const LO_ZERO: f32 = -103.972_08;
        const HI: f32 = 88.722_83;
        let hi = self.fconst(m, HI);
        // (A NaN `x` is picked back at the end.)
        let xc = self.clamp_hi(m, x, HI);
        let xc = self.clamp_lo(m, xc, -103.5);
        let l2e = self.fconst(m, std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(xc, l2e);
        let fx = self.b.ins().nearest(t);
        let c1 = self.fconst(m, 0.693_359_4);
        let c2 = self.fconst(m, -2.121_944_4e-4);
        let nfx = self.b.ins().fneg(fx);
        let r = self.fma(nfx, c1, xc);
        let r = self.fma(nfx, c2, r);
        let z = self.b.ins().fmul(r, r);
        let p = self.horner(
            m,
            r,
            &[
                1.987_569_1e-4,
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                0.5,
            ],
        );
        let y = self.fma(p, z, r);
        let one = self.fconst(m, 1.0);
        let y = self.b.ins().fadd(y, one);
        // y * 2^n in two halves, so that n in -150..=128 never leaves the exponent range.
        let ity = if m == Mode::S { I32 } else { I32X4 };
        let n = self.b.ins().fcvt_to_sint_sat(ity, fx);
        let n1 = self.b.ins().sshr_imm_u(n, 1);
        let n2 = self.b.ins().isub(n, n1);
        let s1 = self.pow2(m, n1);
        let s2 = self.pow2(m, n2);
        let y = self.b.ins().fmul(y, s1);
        let y = self.b.ins().fmul(y, s2);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let inf = self.fconst(m, f32::INFINITY);
        let y = self.pick(m, over, inf, y);
        // Below ln(2^-150) the true value rounds to 0 (the clamped input would give the
        // smallest subnormal, exp(-103.5) ≈ 1.2e-45, right only down to there).
        let lz = self.fconst(m, LO_ZERO);
        let under = self.b.ins().fcmp(FloatCC::LessThan, x, lz);
        let zero = self.fconst(m, 0.0);
        let y = self.pick(m, under, zero, y);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.pick(m, nan, x, y)
    }

    /// `tanh(x)` inline (Cephes `tanhf`): an odd polynomial below 0.625, else
    /// `sign(x) * (1 - 2 / (exp(2|x|) + 1))`.
    fn tanh(&mut self, m: Mode, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let two = self.fconst(m, 2.0);
        let e = self.b.ins().fmul(ax, two);
        let e = self.exp(m, e);
        let one = self.fconst(m, 1.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let big = self.b.ins().fsub(one, q);
        let big = match m {
            Mode::S => self.b.ins().fcopysign(big, x),
            // x64 has no vector `fcopysign`: take the sign bit of `x`, the rest of `big`.
            Mode::V => {
                let sign = self.fconst(m, -0.0);
                self.b.ins().bitselect(sign, x, big)
            }
        };
        let z = self.b.ins().fmul(x, x);
        let p = self.horner(
            m,
            z,
            &[
                -5.704_988_7e-3,
                2.063_908_8e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328e-1,
            ],
        );
        let p = self.b.ins().fmul(p, z);
        let small = self.fma(p, x, x);
        let lim = self.fconst(m, 0.625);
        let c = self.b.ins().fcmp(FloatCC::LessThan, ax, lim);
        let y = self.pick(m, c, small, big);
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.pick(m, nan, x, y)
    }

    fn binary(&mut self, m: Mode, op: BinaryOp, a: Value, b: Value) -> Value {
        match op {
            BinaryOp::Add => self.b.ins().fadd(a, b),
            BinaryOp::Sub => self.b.ins().fsub(a, b),
            BinaryOp::Mul => self.b.ins().fmul(a, b),
            BinaryOp::Div => self.b.ins().fdiv(a, b),
            BinaryOp::Max => self.max(m, a, b),
            BinaryOp::Min => self.min(m, a, b),
            BinaryOp::Pow => self.call(m, "netc_pow", &[a, b]),
            BinaryOp::Greater => {
                let c = self.b.ins().fcmp(FloatCC::GreaterThan, a, b);
                let one = self.fconst(m, 1.0);
                let zero = self.fconst(m, 0.0);
                self.pick(m, c, one, zero)
            }
        }
    }

    /// Evaluates the steps `i` of `prog` with `want[i]` that are not in `vals` yet.
    fn eval(
        &mut self,
        m: Mode,
        prog: &[Scalar],
        vals: &mut [Option<Value>],
        want: &[bool],
        load: &mut LoadFn,
        reduced: Option<Value>,
    ) {
        for (i, s) in prog.iter().enumerate() {
            if vals[i].is_some() || !want[i] {
                continue;
            }
            // Operands precede their uses and are wanted whenever their user is (liveness and
            // invariance are both closed under operands), so they are computed already.
            let g = |j: usize| vals[j].expect("operand evaluated before its use");
            let v = match *s {
                Scalar::Load(a) => load(self, a),
                Scalar::Const(c) => self.fconst(m, c),
                Scalar::Reduced => reduced.expect("Reduced only in epilogues"),
                Scalar::Unary(op, x) => self.unary(m, op, g(x)),
                Scalar::Binary(op, x, y) => self.binary(m, op, g(x), g(y)),
                Scalar::Select(c, x, y) => {
                    let z = self.fconst(m, 0.0);
                    let cond = self.b.ins().fcmp(FloatCC::NotEqual, g(c), z);
                    self.pick(m, cond, g(x), g(y))
                }
            };
            vals[i] = Some(v);
        }
    }

    /// A counted loop `for i in (lo..hi).step_by(step)` carrying `carry`; with `guard` the
    /// range may be empty, without it `lo < hi` must hold.
    fn lp(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        guard: bool,
        carry: Vec<Value>,
        body: &mut BodyFn,
    ) -> Vec<Value> {
        let tys: Vec<Type> = carry
            .iter()
            .map(|&v| self.b.func.dfg.value_type(v))
            .collect();
        let header = self.b.create_block();
        self.b.append_block_param(header, I64);
        let exit = self.b.create_block();
        for &t in &tys {
            self.b.append_block_param(header, t);
            self.b.append_block_param(exit, t);
        }
        let args = |first: Option<Value>, rest: &[Value]| -> Vec<BlockArg> {
            first
                .iter()
                .chain(rest)
                .map(|&v| BlockArg::Value(v))
                .collect()
        };
        if guard {
            let c = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
            self.b.ins().brif(
                c,
                header,
                &args(Some(lo), &carry),
                exit,
                &args(None, &carry),
            );
        } else {
            self.b.ins().jump(header, &args(Some(lo), &carry));
        }
        self.b.switch_to_block(header);
        let ps = self.b.block_params(header).to_vec();
        let out = body(self, ps[0], ps[1..].to_vec());
        let next = self.b.ins().iadd_imm_s(ps[0], step);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        self.b
            .ins()
            .brif(c, header, &args(Some(next), &out), exit, &args(None, &out));
        self.b.switch_to_block(exit);
        self.b.block_params(exit).to_vec()
    }

    /// `base + i * stride * 4` (byte offsets), per stream.
    fn advance(&mut self, offs: &[Value], i: Value, strides: &[i64]) -> Vec<Value> {
        offs.iter()
            .zip(strides)
            .map(|(&o, &s)| {
                if s == 0 {
                    o
                } else {
                    let d = self.b.ins().imul_imm_s(i, s * 4);
                    self.b.ins().iadd(o, d)
                }
            })
            .collect()
    }

    /// The innermost loop over `lo..hi` evaluating `prog` at each point: accesses read at
    /// `addr[a] + j * strides[a] * 4`. With `vec`, a 4-lane loop covers the largest multiple of
    /// 4 and a scalar loop the rest (`vcarry` and `scarry` are carried by each). `const_len`
    /// is `hi - lo` when known at compile time (then `lo < hi` need not be checked).
    ///
    /// With `unroll` > 1 (a power of two), the vector loop first runs `unroll` points of 4
    /// lanes per iteration, each copy `u` carrying its own `vcarry[u·k..(u+1)·k]` (`k` =
    /// `vcarry.len() / unroll`): independent accumulators, so a reduction is not bound by
    /// the latency of one chain of vector adds. The remaining vectors use copy 0's carry.
    #[allow(clippy::too_many_arguments)]
    fn inner(
        &mut self,
        prog: &[Scalar],
        strides: &[i64],
        addr: &[Value],
        (vec, unroll): (bool, usize),
        (lo, hi, const_len): (Value, Value, Option<i64>),
        outs: &[usize],
        vcarry: Vec<Value>,
        scarry: Vec<Value>,
        fin: &mut FinFn,
    ) -> (Vec<Value>, Vec<Value>) {
        let live = live_from(prog, outs);
        let inv = invariant_steps(prog, &|a| strides[a] == 0);
        let hoist: Vec<bool> = live.iter().zip(&inv).map(|(&l, &i)| l && i).collect();
        let fl = self.fl;
        // Loop-invariant steps, computed once in scalar form (and splatted for vectors).
        let mut pre_s: Vec<Option<Value>> = vec![None; prog.len()];
        self.eval(
            Mode::S,
            prog,
            &mut pre_s,
            &hoist,
            &mut |em: &mut Em, a| em.b.ins().load(F32, fl, addr[a], 0),
            None,
        );
        let load_at = |em: &mut Em, m: Mode, j: Value, j4: &mut Option<Value>, a: usize| {
            let s = strides[a];
            let p = if s == 1 {
                let j4 = *j4.get_or_insert_with(|| em.b.ins().ishl_imm_u(j, 2));
                em.b.ins().iadd(addr[a], j4)
            } else {
                let d = em.b.ins().imul_imm_s(j, s * 4);
                em.b.ins().iadd(addr[a], d)
            };
            em.b.ins().load(m.ty(), fl, p, 0)
        };
        let mut tail_lo = lo;
        let mut vout = vcarry;
        if vec {
            let pre_v: Vec<Option<Value>> = pre_s
                .iter()
                .map(|v| v.map(|v| self.b.ins().splat(F32X4, v)))
                .collect();
            // One vector point: the program at `j`, then `fin` with its carried values.
            let mut point = |em: &mut Em, j: Value, c: Vec<Value>| {
                let mut vals = pre_v.clone();
                let mut j4 = None;
                em.eval(
                    Mode::V,
                    prog,
                    &mut vals,
                    &live,
                    &mut |em: &mut Em, a| load_at(em, Mode::V, j, &mut j4, a),
                    None,
                );
                let res = outs.iter().map(|&o| vals[o].expect("result")).collect();
                fin(em, Mode::V, j, res, c)
            };
            let mut vlo = lo;
            let width = 4 * unroll as i64;
            let per = vout.len() / unroll;
            if unroll > 1 && const_len.is_none_or(|n| n >= width) {
                let (uend, guard) = match const_len {
                    Some(n) => (self.b.ins().iadd_imm_s(lo, n / width * width), false),
                    None => {
                        let len = self.b.ins().isub(hi, lo);
                        let lenu = self.b.ins().band_imm_s(len, !(width - 1));
                        (self.b.ins().iadd(lo, lenu), true)
                    }
                };
                vout = self.lp(lo, uend, width, guard, vout, &mut |em, j, c| {
                    let mut next = Vec::with_capacity(c.len());
                    for u in 0..unroll {
                        let ju = em.b.ins().iadd_imm_s(j, 4 * u as i64);
                        next.extend(point(em, ju, c[u * per..(u + 1) * per].to_vec()));
                    }
                    next
                });
                vlo = uend;
            }
            let rest = vout.split_off(per);
            let (vend, run, guard) = match const_len {
                Some(n) => (
                    self.b.ins().iadd_imm_s(lo, n / 4 * 4),
                    n / 4 * 4 > n / width * width || (unroll == 1 && n >= 4),
                    false,
                ),
                None => {
                    let len = self.b.ins().isub(hi, lo);
                    let len4 = self.b.ins().band_imm_s(len, !3);
                    (self.b.ins().iadd(lo, len4), true, true)
                }
            };
            if run {
                vout = self.lp(vlo, vend, 4, guard || vlo != lo, vout, &mut |em, j, c| {
                    point(em, j, c)
                });
            }
            vout.extend(rest);
            tail_lo = vend;
        }
        let (run, guard) = match const_len {
            Some(n) => (if vec { n % 4 != 0 } else { n > 0 }, false),
            None => (true, vec),
        };
        let mut sout = scarry;
        if run {
            sout = self.lp(tail_lo, hi, 1, guard, sout, &mut |em, j, c| {
                let mut vals = pre_s.clone();
                let mut j4 = None;
                em.eval(
                    Mode::S,
                    prog,
                    &mut vals,
                    &live,
                    &mut |em: &mut Em, a| load_at(em, Mode::S, j, &mut j4, a),
                    None,
                );
                let res = outs.iter().map(|&o| vals[o].expect("result")).collect();
                fin(em, Mode::S, j, res, c)
            });
        }
        (vout, sout)
    }

    // ---- plain elementwise kernels ----

    fn plain(&mut self, k: &LoopKernel, p: &Ptrs, begin: Value, end: Value) -> bool {
        let na = k.accesses.len();
        let dense = dense_strides(&k.shape);
        let dims: Vec<Dim> = (0..k.shape.len())
            .map(|d| Dim {
                n: k.shape[d],
                s: k.accesses
                    .iter()
                    .map(|a| a.strides[d] as i64)
                    .chain([dense[d]])
                    .collect(),
            })
            .collect();
        let (dims, factor) = simplify(dims, true, na + 1);
        let lo = self.b.ins().imul_imm_s(begin, factor);
        let hi = self.b.ins().imul_imm_s(end, factor);
        let inner_s = &dims[dims.len() - 1].s;
        let vec = inner_s[..na].iter().all(|&s| s == 0 || s == 1)
            && (dims.len() == 1 || dims[dims.len() - 1].n >= 4);
        let mut offs: Vec<i64> = k.accesses.iter().map(|a| a.offset as i64 * 4).collect();
        offs.push(0);
        let offs: Vec<Value> = offs.iter().map(|&o| self.iconst(o)).collect();
        self.plain_level(k, p, &dims, 0, offs, (lo, hi, None), vec);
        vec
    }

    #[allow(clippy::too_many_arguments)]
    fn plain_level(
        &mut self,
        k: &LoopKernel,
        p: &Ptrs,
        dims: &[Dim],
        d: usize,
        offs: Vec<Value>,
        range: (Value, Value, Option<i64>),
        vec: bool,
    ) {
        if d + 1 == dims.len() {
            self.plain_inner(k, p, &dims[d].s, &[offs], range, vec);
            return;
        }
        let (lo, hi, known) = range;
        let next = dims[d + 1].n as i64;
        if let (Some(n), true, true) = (known, vec, d + 2 == dims.len()) {
            // Two indices of this dim per pass when the next is the innermost: each stream is
            // then read (and written) at two places at once, which the prefetchers serve faster
            // than one, as in the reductions.
            if n >= 2 {
                let s = &dims[d].s;
                let hi2 = self.iconst(n / 2);
                self.lp(lo, hi2, 1, false, vec![], &mut |em, i, _| {
                    let i2 = em.b.ins().ishl_imm_u(i, 1);
                    let o = em.advance(&offs, i2, s);
                    let o2: Vec<Value> = o
                        .iter()
                        .zip(s)
                        .map(|(&o, &s)| em.b.ins().iadd_imm_s(o, s * 4))
                        .collect();
                    let (lo2, hi2) = (em.iconst(0), em.iconst(next));
                    em.plain_inner(k, p, &dims[d + 1].s, &[o, o2], (lo2, hi2, Some(next)), vec);
                    vec![]
                });
                if n % 2 == 1 {
                    let last = self.iconst(n - 1);
                    let o = self.advance(&offs, last, s);
                    let (lo2, hi2) = (self.iconst(0), self.iconst(next));
                    self.plain_inner(k, p, &dims[d + 1].s, &[o], (lo2, hi2, Some(next)), vec);
                }
                return;
            }
        }
        self.lp(lo, hi, 1, false, vec![], &mut |em, i, _| {
            let o = em.advance(&offs, i, &dims[d].s);
            let (lo2, hi2) = (em.iconst(0), em.iconst(next));
            em.plain_level(k, p, dims, d + 1, o, (lo2, hi2, Some(next)), vec);
            vec![]
        });
    }

    /// The innermost loop of an elementwise kernel (`strides` its per-stream strides) at each
    /// of the offset sets `sets` (one or two points per index).
    fn plain_inner(
        &mut self,
        k: &LoopKernel,
        p: &Ptrs,
        strides: &[i64],
        sets: &[Vec<Value>],
        range: (Value, Value, Option<i64>),
        vec: bool,
    ) {
        let na = k.accesses.len();
        let len = k.program.len();
        let addr: Vec<Value> = sets
            .iter()
            .flat_map(|offs| (0..na).map(move |a| (a, offs[a])))
            .map(|(a, o)| self.b.ins().iadd(p.acc[a], o))
            .collect();
        let outs: Vec<Value> = sets
            .iter()
            .map(|offs| self.b.ins().iadd(p.out, offs[na]))
            .collect();
        let prog = replicate(&k.program, sets.len(), na);
        let results: Vec<usize> = (0..sets.len()).map(|k2| (k2 + 1) * len - 1).collect();
        let all: Vec<i64> = sets
            .iter()
            .flat_map(|_| strides[..na].iter().copied())
            .collect();
        self.inner(
            &prog,
            &all,
            &addr,
            (vec, 1),
            range,
            &results,
            vec![],
            vec![],
            &mut |em, _m, j, v, _| {
                let j4 = em.b.ins().ishl_imm_u(j, 2);
                for (out, v) in outs.iter().zip(v) {
                    let at = em.b.ins().iadd(*out, j4);
                    em.b.ins().store(em.fl, v, at, 0);
                }
                vec![]
            },
        );
    }

    // ---- reductions ----

    fn reduction(
        &mut self,
        k: &LoopKernel,
        r: &Reduction,
        p: &Ptrs,
        begin: Value,
        end: Value,
    ) -> bool {
        let (na, ne) = (k.accesses.len(), r.epilogue_accesses.len());
        let lead = k.shape.len() - r.axes;
        let dense = dense_strides(&k.shape[..lead]);
        let lead_dims: Vec<Dim> = (0..lead)
            .map(|d| Dim {
                n: k.shape[d],
                s: k.accesses
                    .iter()
                    .chain(&r.epilogue_accesses)
                    .map(|a| a.strides[d] as i64)
                    .chain([dense[d]])
                    .collect(),
            })
            .collect();
        let red_dims: Vec<Dim> = (lead..k.shape.len())
            .map(|d| Dim {
                n: k.shape[d],
                s: k.accesses.iter().map(|a| a.strides[d] as i64).collect(),
            })
            .collect();
        let (mut lead_dims, mut factor) = simplify(lead_dims, true, na + ne + 1);
        if lead == 0 {
            factor = 1;
            lead_dims = vec![Dim {
                n: 1,
                s: vec![0; na + ne + 1],
            }];
        }
        let (red_dims, _) = simplify(red_dims, false, na);
        let inner = &red_dims[red_dims.len() - 1];
        let vec = inner.n >= 4 && inner.s.iter().all(|&s| s == 0 || s == 1);
        let count: usize = k.shape[lead..].iter().product();
        let lo = self.b.ins().imul_imm_s(begin, factor);
        let hi = self.b.ins().imul_imm_s(end, factor);
        let mut offs: Vec<i64> = k
            .accesses
            .iter()
            .chain(&r.epilogue_accesses)
            .map(|a| a.offset as i64 * 4)
            .collect();
        offs.push(0);
        let offs: Vec<Value> = offs.iter().map(|&o| self.iconst(o)).collect();
        let ctx = RedCtx {
            k,
            r,
            p,
            lead_dims: &lead_dims,
            red_dims: &red_dims,
            vec,
            count,
        };
        self.red_lead(&ctx, 0, offs, lo, hi);
        vec
    }

    fn red_lead(&mut self, c: &RedCtx, d: usize, offs: Vec<Value>, lo: Value, hi: Value) {
        self.lp(lo, hi, 1, false, vec![], &mut |em, i, _| {
            let o = em.advance(&offs, i, &c.lead_dims[d].s);
            if d + 1 < c.lead_dims.len() {
                let (lo2, hi2) = (em.iconst(0), em.iconst(c.lead_dims[d + 1].n as i64));
                em.red_lead(c, d + 1, o, lo2, hi2);
            } else {
                em.red_point(c, &o);
            }
            vec![]
        });
    }

    /// One output point of a reduction: the reduced nest (every result at once), then each
    /// result's epilogue and store.
    fn red_point(&mut self, c: &RedCtx, offs: &[Value]) {
        let (na, ne) = (c.k.accesses.len(), c.r.epilogue_accesses.len());
        let op = c.r.op;
        let nr = 1 + c.r.more.len();
        let init = if op == ReduceOp::Max {
            f32::NEG_INFINITY
        } else {
            0.0
        };
        // [scalar accumulator per result, then per unrolled copy a vector one per result].
        let mut carry: Vec<Value> = (0..nr).map(|_| self.fconst(Mode::S, init)).collect();
        if c.vec {
            for _ in 0..RED_UNROLL * nr {
                carry.push(self.fconst(Mode::V, init));
            }
        }
        let carry = self.red_level(c, 0, offs[..na].to_vec(), carry);
        let combine = |em: &mut Em, m: Mode, x: Value, y: Value| match op {
            ReduceOp::Max => em.max(m, x, y),
            _ => em.b.ins().fadd(x, y),
        };
        let fl = self.fl;
        let addr: Vec<Value> = (0..ne)
            .map(|e| self.b.ins().iadd(c.p.epi[e], offs[na + e]))
            .collect();
        for r in 0..nr {
            let mut acc = carry[r];
            if c.vec {
                // The unrolled copies' accumulators pairwise, then the lanes.
                let mut vs: Vec<Value> = (0..RED_UNROLL).map(|u| carry[nr + u * nr + r]).collect();
                while vs.len() > 1 {
                    let half = vs.len() / 2;
                    for i in 0..half {
                        vs[i] = combine(self, Mode::V, vs[i], vs[i + half]);
                    }
                    vs.truncate(half);
                }
                let lanes: Vec<Value> = (0..4u8)
                    .map(|l| self.b.ins().extractlane(vs[0], l))
                    .collect();
                let a = combine(self, Mode::S, lanes[0], lanes[1]);
                let b = combine(self, Mode::S, lanes[2], lanes[3]);
                let ab = combine(self, Mode::S, a, b);
                acc = combine(self, Mode::S, ab, acc);
            }
            if op == ReduceOp::Mean {
                let n = self.fconst(Mode::S, c.count as f32);
                acc = self.b.ins().fdiv(acc, n);
            }
            let epi = if r == 0 {
                &c.r.epilogue
            } else {
                &c.r.more[r - 1].epilogue
            };
            if !epi.is_empty() {
                let mut vals = vec![None; epi.len()];
                let live = live_steps(epi);
                self.eval(
                    Mode::S,
                    epi,
                    &mut vals,
                    &live,
                    &mut |em: &mut Em, a| em.b.ins().load(F32, fl, addr[a], 0),
                    Some(acc),
                );
                acc = vals[epi.len() - 1].expect("result");
            }
            let base = if r == 0 { c.p.out } else { c.p.more_out[r - 1] };
            let at = self.b.ins().iadd(base, offs[na + ne]);
            self.b.ins().store(self.fl, acc, at, 0);
        }
    }

    /// The reduced dims from `d` inward; `carry` is `[scalar acc per result, (vector accs)]`
    /// (see [`Self::red_point`]).
    fn red_level(
        &mut self,
        c: &RedCtx,
        d: usize,
        offs: Vec<Value>,
        carry: Vec<Value>,
    ) -> Vec<Value> {
        let dim = &c.red_dims[d];
        let lo = self.iconst(0);
        let hi = self.iconst(dim.n as i64);
        if d + 2 == c.red_dims.len() && c.vec && dim.n >= 2 {
            // Two indices of the dim outside the innermost per pass (e.g. two images of a
            // batchnorm statistic): the inner loop then reads two streams at once, which a
            // core's prefetchers serve faster than one (16 -> 24 GB/s on 2 cores).
            let pairs = dim.n / 2;
            let hi2 = self.iconst(pairs as i64);
            let carry = self.lp(lo, hi2, 1, false, carry, &mut |em, i, cr| {
                let i2 = em.b.ins().ishl_imm_u(i, 1);
                let o = em.advance(&offs, i2, &dim.s);
                let o2: Vec<Value> = o
                    .iter()
                    .zip(&dim.s)
                    .map(|(&o, &s)| em.b.ins().iadd_imm_s(o, s * 4))
                    .collect();
                em.red_inner(c, &[o, o2], cr)
            });
            if dim.n % 2 == 1 {
                let last = self.iconst(dim.n as i64 - 1);
                let o = self.advance(&offs, last, &dim.s);
                return self.red_inner(c, &[o], carry);
            }
            return carry;
        }
        if d + 1 < c.red_dims.len() {
            return self.lp(lo, hi, 1, false, carry, &mut |em, i, cr| {
                let o = em.advance(&offs, i, &dim.s);
                em.red_level(c, d + 1, o, cr)
            });
        }
        self.red_inner(c, &[offs], carry)
    }

    /// The innermost reduced dim, at each of the offset sets `sets` (one per stream of the
    /// program: one or two), every result's values of all sets combined before they are
    /// accumulated.
    fn red_inner(&mut self, c: &RedCtx, sets: &[Vec<Value>], carry: Vec<Value>) -> Vec<Value> {
        let dim = &c.red_dims[c.red_dims.len() - 1];
        let lo = self.iconst(0);
        let hi = self.iconst(dim.n as i64);
        let na = c.k.accesses.len();
        let addr: Vec<Value> = sets
            .iter()
            .flat_map(|offs| offs.iter().enumerate().map(|(a, &o)| (a, o)))
            .map(|(a, o)| self.b.ins().iadd(c.p.acc[a], o))
            .collect();
        let op = c.r.op;
        let nr = 1 + c.r.more.len();
        let (scarry, vcarry) = (carry[..nr].to_vec(), carry[nr..].to_vec());
        let mut outs: Vec<usize> = std::iter::once(c.k.program.len() - 1)
            .chain(c.r.more.iter().map(|m| m.step))
            .collect();
        // The program once per set, loads of set k reading accesses k·na..; then per result
        // the sets' values combined.
        let len = c.k.program.len();
        let mut prog = replicate(&c.k.program, sets.len(), na);
        if sets.len() == 2 {
            if op == ReduceOp::Max {
                // Both sets' values go to the accumulation (the same max as one set's).
                let second: Vec<usize> = outs.iter().map(|o| o + len).collect();
                outs.extend(second);
            } else {
                // Sums: the two values added first, off the accumulator's dependency chain.
                for o in &mut outs {
                    prog.push(Scalar::Binary(BinaryOp::Add, *o, *o + len));
                    *o = prog.len() - 1;
                }
            }
        }
        let strides: Vec<i64> = sets.iter().flat_map(|_| dim.s.iter().copied()).collect();
        let (v, s) = self.inner(
            &prog,
            &strides,
            &addr,
            (c.vec, RED_UNROLL),
            (lo, hi, Some(dim.n as i64)),
            &outs,
            vcarry,
            scarry,
            &mut |em, m, _j, x, acc| {
                // `x` holds each result's value (of each set, for a max over two).
                (0..acc.len())
                    .map(|r| {
                        let mut a = acc[r];
                        for v in x.iter().skip(r).step_by(acc.len()) {
                            a = match op {
                                ReduceOp::Max => em.max(m, *v, a),
                                _ => em.b.ins().fadd(a, *v),
                            };
                        }
                        a
                    })
                    .collect()
            },
        );
        s.into_iter().chain(v).collect()
    }

    // ---- pooling windows ----

    fn window(&mut self, k: &LoopKernel, w: &Window, p: &Ptrs, begin: Value, end: Value) {
        let r = k.shape.len();
        let na = k.accesses.len();
        let dense = dense_strides(&k.shape);
        let mut offs: Vec<i64> = k.accesses.iter().map(|a| a.offset as i64 * 4).collect();
        offs.push(0);
        let offs: Vec<Value> = offs.iter().map(|&o| self.iconst(o)).collect();
        if r == 2 {
            self.win_rows(k, w, p, &offs, begin, end);
            return;
        }
        let dims: Vec<Dim> = (0..r - 2)
            .map(|d| Dim {
                n: k.shape[d],
                s: k.accesses
                    .iter()
                    .map(|a| a.strides[d] as i64)
                    .chain([dense[d]])
                    .collect(),
            })
            .collect();
        let (dims, factor) = simplify(dims, true, na + 1);
        let lo = self.b.ins().imul_imm_s(begin, factor);
        let hi = self.b.ins().imul_imm_s(end, factor);
        self.win_lead(k, w, p, &dims, 0, offs, lo, hi);
    }

    #[allow(clippy::too_many_arguments)]
    fn win_lead(
        &mut self,
        k: &LoopKernel,
        w: &Window,
        p: &Ptrs,
        dims: &[Dim],
        d: usize,
        offs: Vec<Value>,
        lo: Value,
        hi: Value,
    ) {
        let oh = k.shape[k.shape.len() - 2] as i64;
        self.lp(lo, hi, 1, false, vec![], &mut |em, i, _| {
            let o = em.advance(&offs, i, &dims[d].s);
            if d + 1 < dims.len() {
                let (lo2, hi2) = (em.iconst(0), em.iconst(dims[d + 1].n as i64));
                em.win_lead(k, w, p, dims, d + 1, o, lo2, hi2);
            } else {
                let (lo2, hi2) = (em.iconst(0), em.iconst(oh));
                em.win_rows(k, w, p, &o, lo2, hi2);
            }
            vec![]
        });
    }

    /// Valid window cells along one axis for a window starting at `s` (may be negative):
    /// `(k_lo, k_hi, pool)`, `pool` being PyTorch's avg divisor factor before clipping.
    fn win_axis(&mut self, s: Value, n: usize, k: usize, d: usize, pad_end: usize) -> [Value; 3] {
        let zero = self.iconst(0);
        let neg = self.b.ins().isub(zero, s);
        let neg = self.b.ins().smax(neg, zero);
        let ceil_div = |em: &mut Em, x: Value| {
            if d == 1 {
                x
            } else {
                let x = em.b.ins().iadd_imm_s(x, d as i64 - 1);
                em.b.ins().udiv_imm_u(x, d as i64)
            }
        };
        let k_lo = ceil_div(self, neg);
        let nn = self.iconst(n as i64);
        let rest = self.b.ins().isub(nn, s);
        let rest = self.b.ins().smax(rest, zero);
        let rest = ceil_div(self, rest);
        let kk = self.iconst(k as i64);
        let k_hi = self.b.ins().smin(rest, kk);
        let end = self.b.ins().iadd_imm_s(s, k as i64);
        let lim = self.iconst((n + pad_end) as i64);
        let end = self.b.ins().smin(end, lim);
        let pool = self.b.ins().isub(end, s);
        [k_lo, k_hi, pool]
    }

    /// Evaluates the window program at one cell (`cell`: byte offsets per access) and folds
    /// it into `acc` (max, or sum for averages).
    fn win_cell(
        &mut self,
        k: &LoopKernel,
        w: &Window,
        live: &[bool],
        p: &Ptrs,
        cell: &[Value],
        acc: Value,
    ) -> Value {
        let fl = self.fl;
        let mut vals = vec![None; k.program.len()];
        self.eval(
            Mode::S,
            &k.program,
            &mut vals,
            live,
            &mut |em: &mut Em, a| {
                let at = em.b.ins().iadd(p.acc[a], cell[a]);
                em.b.ins().load(F32, fl, at, 0)
            },
            None,
        );
        let v = vals[k.program.len() - 1].expect("result");
        if w.max {
            self.max(Mode::S, v, acc)
        } else {
            self.b.ins().fadd(acc, v)
        }
    }

    /// Stores a pooled value at output column `ow` of the row starting at byte `row_out`.
    fn win_store(&mut self, value: Value, ow: Value, row_out: Value, p: &Ptrs) {
        let o = self.b.ins().ishl_imm_u(ow, 2);
        let o = self.b.ins().iadd(o, row_out);
        let at = self.b.ins().iadd(p.out, o);
        self.b.ins().store(self.fl, value, at, 0);
    }

    fn win_rows(
        &mut self,
        k: &LoopKernel,
        w: &Window,
        p: &Ptrs,
        offs: &[Value],
        lo: Value,
        hi: Value,
    ) {
        let r = k.shape.len();
        let na = k.accesses.len();
        let ow_n = k.shape[r - 1] as i64;
        let sh: Vec<i64> = k.accesses.iter().map(|a| a.strides[r - 2] as i64).collect();
        let sw: Vec<i64> = k.accesses.iter().map(|a| a.strides[r - 1] as i64).collect();
        let live = live_steps(&k.program);
        // Windows that never touch padding or fall off the input, with few cells, are unrolled.
        let fits = |axis: usize, out: usize| {
            let reach =
                (out.max(1) - 1) * w.stride[axis] + w.dilation[axis] * (w.kernel[axis] - 1) + 1;
            reach <= w.in_hw[axis]
        };
        let interior = w.padding == [0; 4]
            && fits(0, k.shape[r - 2])
            && fits(1, k.shape[r - 1])
            && w.kernel[0] * w.kernel[1] <= 16;
        self.lp(lo, hi, 1, false, vec![], &mut |em, oh, _| {
            let hs = em.b.ins().imul_imm_s(oh, w.stride[0] as i64);
            let hs = em.b.ins().iadd_imm_s(hs, -(w.padding[0] as i64));
            let [kh_lo, kh_hi, pool_h] =
                em.win_axis(hs, w.in_hw[0], w.kernel[0], w.dilation[0], w.padding[1]);
            let row_out = em.b.ins().imul_imm_s(oh, ow_n * 4);
            let row_out = em.b.ins().iadd(row_out, offs[na]);
            let (zero, own) = (em.iconst(0), em.iconst(ow_n));
            em.lp(zero, own, 1, false, vec![], &mut |em, ow, _| {
                let ws = em.b.ins().imul_imm_s(ow, w.stride[1] as i64);
                let ws = em.b.ins().iadd_imm_s(ws, -(w.padding[2] as i64));
                let [kw_lo, kw_hi, pool_w] =
                    em.win_axis(ws, w.in_hw[1], w.kernel[1], w.dilation[1], w.padding[3]);
                let init = em.fconst(Mode::S, if w.max { f32::NEG_INFINITY } else { 0.0 });
                if interior {
                    // Every window lies inside the input: unroll the cells with no bounds.
                    let mut acc = init;
                    for kh in 0..w.kernel[0] {
                        let h = em.b.ins().iadd_imm_s(hs, (kh * w.dilation[0]) as i64);
                        let row = em.advance(&offs[..na], h, &sh);
                        for kw in 0..w.kernel[1] {
                            let x = em.b.ins().iadd_imm_s(ws, (kw * w.dilation[1]) as i64);
                            let cell = em.advance(&row, x, &sw);
                            acc = em.win_cell(k, w, &live, p, &cell, acc);
                        }
                    }
                    let value = if w.max {
                        acc
                    } else {
                        let div = em.fconst(Mode::S, (w.kernel[0] * w.kernel[1]) as f32);
                        em.b.ins().fdiv(acc, div)
                    };
                    em.win_store(value, ow, row_out, p);
                    return vec![];
                }
                let acc = em.lp(kh_lo, kh_hi, 1, true, vec![init], &mut |em, kh, acc| {
                    let h = em.b.ins().imul_imm_s(kh, w.dilation[0] as i64);
                    let h = em.b.ins().iadd(h, hs);
                    let row = em.advance(&offs[..na], h, &sh);
                    em.lp(kw_lo, kw_hi, 1, true, acc, &mut |em, kw, acc| {
                        let x = em.b.ins().imul_imm_s(kw, w.dilation[1] as i64);
                        let x = em.b.ins().iadd(x, ws);
                        let cell = em.advance(&row, x, &sw);
                        vec![em.win_cell(k, w, &live, p, &cell, acc[0])]
                    })
                })[0];
                let value = if w.max {
                    acc
                } else {
                    let div = if w.count_include_pad {
                        em.b.ins().imul(pool_h, pool_w)
                    } else {
                        let z = em.iconst(0);
                        let ch = em.b.ins().isub(kh_hi, kh_lo);
                        let ch = em.b.ins().smax(ch, z);
                        let cw = em.b.ins().isub(kw_hi, kw_lo);
                        let cw = em.b.ins().smax(cw, z);
                        em.b.ins().imul(ch, cw)
                    };
                    let div = em.b.ins().fcvt_from_sint(F32, div);
                    em.b.ins().fdiv(acc, div)
                };
                em.win_store(value, ow, row_out, p);
                vec![]
            });
            vec![]
        });
    }
}

/// `prog` repeated `copies` times, copy `k` reading accesses `k·na..` (its own stream of each
/// access) and its own earlier steps.
fn replicate(prog: &[Scalar], copies: usize, na: usize) -> Vec<Scalar> {
    let len = prog.len();
    (0..copies)
        .flat_map(|k| {
            let (at, ld) = (k * len, k * na);
            prog.iter().map(move |s| match *s {
                Scalar::Load(a) => Scalar::Load(a + ld),
                Scalar::Unary(u, x) => Scalar::Unary(u, x + at),
                Scalar::Binary(b, x, y) => Scalar::Binary(b, x + at, y + at),
                Scalar::Select(q, x, y) => Scalar::Select(q + at, x + at, y + at),
                s => s,
            })
        })
        .collect()
}

/// Copies of a reduction's vector loop body per iteration, each with its own accumulator
/// (see [`Em::inner`]): four chains of vector adds keep up with memory where one, bound by
/// the add's latency, read about 23 GB/s on two threads.
const RED_UNROLL: usize = 4;

struct RedCtx<'a> {
    k: &'a LoopKernel,
    r: &'a Reduction,
    p: &'a Ptrs,
    lead_dims: &'a [Dim],
    red_dims: &'a [Dim],
    vec: bool,
    count: usize,
}

/// Row-major strides of a dense buffer of `shape`.
fn dense_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1] as i64;
    }
    s
}
