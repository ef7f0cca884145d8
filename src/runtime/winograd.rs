//! Winograd convolution, F(2×2, 3×3) and F(4×4, 3×3): 3×3 kernels at stride 1, undilated,
//! ungrouped.
//!
//! In: an NCHW input batch, the weight transformed once per call by [`transform_weight`]
//! (`U[ξ][o][c] = (G·g·Gᵀ)[ξ]` for the points ξ of an `(m+2)×(m+2)` tile: 16 for `m = 2`,
//! 36 for `m = 4`), and a range of output tiles (`m×m` output pixels each, numbered over the
//! whole batch row by row). Out: those tiles of the NCHW output, written (the caller runs the
//! fused epilogue).
//!
//! How: per block of [`Wino::block`] tiles (sized so the block's transformed input and
//! products stay in L2), each input tile `d` (zero outside the image) becomes `V = Bᵀ·d·B`
//! (16 tiles at a time, one per vector lane; the columns `m` apart are deinterleaved from
//! whole input rows with permutes), then independent products `M[ξ] = U[ξ]·V[ξ]` (output
//! channels × input channels × tiles, our SGEMM reading `V` in place), and each output tile is
//! `Aᵀ·M·A`. A 3×3 convolution's 9 multiply-adds per output and input channel become 4
//! (F(2×2): 2.25× fewer) or 2.25 (F(4×4): 4× fewer). F(2×2)'s coefficients are 0, ±1 and ±½,
//! exact in f32; F(4×4)'s (±2, ±4, ±5, ±8, ⅙, 1/12, 1/24) round more: about 10-20× F(2×2)'s
//! error, 1e-5·√(9c) on unit inputs (the module's tests), still far inside the 1e-4 the
//! comparison with PyTorch allows. [`Wino::pays`] picks the form per convolution.
//!
//! The backward-data pass is the same forward convolution of `dy` with the weight read
//! transposed and flipped ([`WeightAt`]). The weight gradient ([`weight_grad_tiles`], then
//! [`weight_grad_finish`]) sums `(A·dy·Aᵀ)[ξ] · V[ξ]` over the tiles as one product per
//! point per block, then transforms the sums back: `dw = Gᵀ·ΣU·G`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use super::sgemm::lane_mask;

use crate::fuse::kernel::ContractionKind;

/// Points of the transformed tile of F(4×4, 3×3) (6×6), the most of either form.
const XI_MAX: usize = 36;

/// Bytes of one block's transformed input and products: half of L2, the rest for the
/// transformed weight and the input rows (768 KiB measured a little faster than 1.5 and 3 MiB
/// on ResNet-18).
const BLOCK_BYTES: usize = 3 << 18;

/// Transformed weights larger than this are written with non-temporal stores.
const STREAM_BYTES: usize = 2 << 20;

/// Channels per sweep of the transforms across a block's runs.
const CHANNELS: usize = 8;

thread_local! {
    /// Per-thread transformed inputs and products of one block, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The sizes of one Winograd convolution.
#[derive(Clone, Copy, Debug)]
pub struct Wino {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pt: usize,
    pl: usize,
    pub oh: usize,
    pub ow: usize,
    /// Output tile size: 2 for F(2×2, 3×3), 4 for F(4×4, 3×3).
    pub m: usize,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
}

impl Wino {
    /// The Winograd geometry of `kind`, when it is a 3×3, stride-1, undilated, ungrouped
    /// convolution whose padding keeps every tile touching the image.
    pub fn of(kind: &ContractionKind) -> Option<Wino> {
        let ContractionKind::Conv2d {
            n,
            c,
            h,
            w,
            o,
            kernel,
            stride,
            padding: [pt, pb, pl, pr],
            dilation,
            groups,
        } = *kind
        else {
            return None;
        };
        if kernel != [3, 3] || stride != [1, 1] || dilation != [1, 1] || groups != 1 {
            return None;
        }
        if pt > 2 || pb > 2 || pl > 2 || pr > 2 || h + pt + pb < 3 || w + pl + pr < 3 {
            return None;
        }
        let (oh, ow) = (h + pt + pb - 2, w + pl + pr - 2);
        Some(Wino {
            n,
            c,
            h,
            w,
            o,
            pt,
            pl,
            oh,
            ow,
            m: 2,
            th: oh.div_ceil(2),
            tw: ow.div_ceil(2),
        })
    }

    /// The same convolution with output tiles of `m × m` (2 or 4).
    pub fn with_tile(self, m: usize) -> Wino {
        debug_assert!(m == 2 || m == 4);
        Wino {
            m,
            th: self.oh.div_ceil(m),
            tw: self.ow.div_ceil(m),
            ..self
        }
    }

    /// Points of the transformed tile: `(m + 2)²`.
    pub fn xi(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Output tiles per image.
    pub fn image_tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Tiles per block: the block's transformed input (`ξ·c` floats per tile) and products
    /// (`ξ·o` per tile) about [`BLOCK_BYTES`], in whole vectors, 64 to 256 tiles.
    pub fn block(&self) -> usize {
        let per_tile = self.xi() * (self.c + self.o) * 4;
        // With many channels the bytes allow fewer than 64 tiles (F(4×4) at 64 channels in and
        // out: 32, half a microkernel panel; F(2×2) at 256: 24), and each block reads all of
        // U for little work: 64 measured faster (ResNet-18 b16 layer2 in F(4×4) 20.5 -> 18.5
        // ms; training b8@224 layer3 in F(2×2) 48 -> 42 ms), 48 and 96 slower, and 1.5 or 3
        // MiB blocks even or slower.
        (BLOCK_BYTES / per_tile / 16 * 16).clamp(64, 256)
    }

    /// Whether this form should run (each condition measured on ResNet-18 and VGG-16):
    /// enough channels that the products dominate the transforms; enough tiles that a block
    /// fills the microkernel's columns (with few, the transformed weight, 16/9 or 4 times the
    /// size of the weight, is read for little work); at most 25% of the computed pixels past
    /// the output's edge (7×7 maps compute 8×8: ResNet's layer4 measured slower at 1.25 and
    /// even at 1.4 in F(2×2), inference and training; 14×14 maps in F(4×4) compute 16×16,
    /// 1.31: slower than F(2×2)); and at least 6 tiles per tile row, since a run of tiles
    /// fills the transforms' lanes (ResNet-18 at 32×32, 8×8 maps, measured slower than the
    /// direct convolution in either form). F(4×4) pays from 7 tiles a row (28×28 maps,
    /// ResNet-18 b16 layer2 10% faster than F(2×2)); at 56×56, 25% faster; VGG-16 b16 as a
    /// whole 27%.
    pub fn pays(&self) -> bool {
        let tiles = self.n * self.image_tiles();
        let m = self.m;
        let waste = (m * m * self.image_tiles()) as f64 / (self.oh * self.ow) as f64;
        let common = self.c >= 16 && self.o >= 16 && waste < 1.25 && self.tw >= 6;
        if m == 4 {
            return common && tiles >= 64;
        }
        common && tiles >= 128
    }

    /// [`Wino::pays`] for a backward-data pass in F(2×2), which also pays with up to 35% of
    /// the computed pixels past the edge: ResNet's 7×7 layer4 maps (1.31) measured 10% faster
    /// than GEMM + col2im (training b8@224: 7.6 -> 6.9 ms per pass), while their forward
    /// pass and weight gradient, and F(4×4) at 14×14, did not.
    pub fn pays_backward_data(&self) -> bool {
        let waste = (4 * self.image_tiles()) as f64 / (self.oh * self.ow) as f64;
        self.m == 2
            && self.c >= 16
            && self.o >= 16
            && waste < 1.35
            && self.n * self.image_tiles() >= 128
    }

    /// Floats of the transformed weight: `xi()` planes `U[ξ][o][c]`, [`Self::us`] apart.
    pub fn weight_len(&self) -> usize {
        self.xi() * self.us()
    }

    /// Floats from one ξ plane of the transformed weight `U[ξ][o][c]` to the next.
    pub fn us(&self) -> usize {
        plane(self.o * self.c)
    }

    /// Floats from one ξ plane of a block's transformed inputs `V[ξ][c][t]` to the next.
    fn vs(&self, t: usize) -> usize {
        plane(self.c * t)
    }

    /// Floats from one ξ plane of a block's products or output-gradient transforms
    /// `M[ξ][o][t]` to the next.
    fn ms(&self, t: usize) -> usize {
        plane(self.o * t)
    }
}

/// The stride between the ξ planes of a Winograd buffer whose planes hold `n` floats: `n`
/// rounded up to 1024 floats (4 KiB), plus 16. The 16 (or 36) planes are written and read
/// together, one row of each per step; planes a multiple of 4 KiB apart (`o·c` and `c·t` are,
/// for the usual channel counts) all fall in the same L1 cache sets and evict each other,
/// while planes 64 bytes apart modulo 4 KiB spread over 16 (36) sets.
fn plane(n: usize) -> usize {
    n.next_multiple_of(1024) + 16
}

/// Where the weight of a 3×3 convolution is read: `g(o, c)` starts at `o·rs + c·cs` (nine
/// floats, row-major), turned by 180° with `flip`. The forward weight `[o][c][3][3]` is
/// `rs = 9c, cs = 9`; the backward-data pass convolves `dy` with the weight transposed and
/// flipped: `rs = 9, cs = 9c`, `flip`.
#[derive(Clone, Copy, Debug)]
pub struct WeightAt {
    pub rs: usize,
    pub cs: usize,
    pub flip: bool,
}

/// `U[ξ][o][c]` for output channels `o0..o1`: `G·g(o, c)·Gᵀ` with
/// `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`.
///
/// # Safety
/// `w` holds every `g(o, c)` as `at` says; `u` holds [`Wino::weight_len`] floats.
pub unsafe fn transform_weight(
    g: &Wino,
    w: *const f32,
    at: WeightAt,
    u: *mut f32,
    o0: usize,
    o1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX-512F present; extents forwarded.
        unsafe { transform_weight_avx512(g, w, at, u, o0, o1) };
        return;
    }
    for o in o0..o1 {
        for c in 0..g.c {
            let mut k = [0f32; 9];
            for (t, v) in k.iter_mut().enumerate() {
                let t = if at.flip { 8 - t } else { t };
                // SAFETY: g(o, c), as the caller's contract says.
                *v = unsafe { *w.add(o * at.rs + c * at.cs + t) };
            }
            let x = weight_tile_any(g.m, k.map(|v| [v]));
            for (xi, v) in x[..g.xi()].iter().enumerate() {
                // SAFETY: inside U.
                unsafe { *u.add(xi * g.us() + o * g.c + c) = v[0] };
            }
        }
    }
}

/// `G·g·Gᵀ` on lanes of `L` weights at once (scalar or vector, by the caller's type).
#[inline(always)]
fn weight_tile<T: Copy + Lanes>(k: [T; 9]) -> [T; 16] {
    // Rows: G·g (4×3).
    let mut r = [[k[0]; 3]; 4];
    for j in 0..3 {
        let (a, b, c) = (k[j], k[3 + j], k[6 + j]);
        let ac = T::add(a, c);
        r[0][j] = a;
        r[1][j] = T::half(T::add(ac, b));
        r[2][j] = T::half(T::sub(ac, b));
        r[3][j] = c;
    }
    // Columns: (G·g)·Gᵀ (4×4).
    let mut x = [k[0]; 16];
    for i in 0..4 {
        let (a, b, c) = (r[i][0], r[i][1], r[i][2]);
        let ac = T::add(a, c);
        x[4 * i] = a;
        x[4 * i + 1] = T::half(T::add(ac, b));
        x[4 * i + 2] = T::half(T::sub(ac, b));
        x[4 * i + 3] = c;
    }
    x
}

/// `G·g·Gᵀ` of either form, in the first `(m + 2)²` entries.
#[inline(always)]
fn weight_tile_any<T: Copy + Lanes>(m: usize, k: [T; 9]) -> [T; XI_MAX] {
    if m == 4 {
        return weight_tile6(k);
    }
    let x = weight_tile(k);
    std::array::from_fn(|i| x[i % 16])
}

/// `G·(a, b, c)ᵀ` for F(4×4, 3×3)'s `G` (see [`weight_tile6`]). A function, not a closure,
/// so that it and its intrinsics inline into the AVX-512 callers.
#[inline(always)]
fn g3<T: Copy + Lanes>(a: T, b: T, c: T) -> [T; 6] {
    let ac = T::add(a, c);
    let p = T::add(T::scale(a, 1.0 / 24.0), T::scale(c, 1.0 / 6.0));
    let q = T::scale(b, 1.0 / 12.0);
    [
        T::scale(a, 0.25),
        T::scale(T::add(ac, b), -1.0 / 6.0),
        T::scale(T::sub(ac, b), -1.0 / 6.0),
        T::add(p, q),
        T::sub(p, q),
        c,
    ]
}

/// F(4×4, 3×3)'s `G·g·Gᵀ` (6×6) with
/// `G = [[¼, 0, 0], [-⅙, -⅙, -⅙], [-⅙, ⅙, -⅙], [1/24, 1/12, ⅙], [1/24, -1/12, ⅙], [0, 0, 1]]`.
#[inline(always)]
fn weight_tile6<T: Copy + Lanes>(k: [T; 9]) -> [T; XI_MAX] {
    // Rows: G·g (6×3).
    let mut r = [[k[0]; 3]; 6];
    for j in 0..3 {
        for (i, v) in g3(k[j], k[3 + j], k[6 + j]).into_iter().enumerate() {
            r[i][j] = v;
        }
    }
    // Columns: (G·g)·Gᵀ (6×6).
    let mut x = [k[0]; XI_MAX];
    for i in 0..6 {
        for (j, v) in g3(r[i][0], r[i][1], r[i][2]).into_iter().enumerate() {
            x[6 * i + j] = v;
        }
    }
    x
}

/// The arithmetic the transforms need, on one float or a vector of them.
trait Lanes {
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn half(a: Self) -> Self;
    fn scale(a: Self, k: f32) -> Self;
}

impl Lanes for [f32; 1] {
    fn add(a: Self, b: Self) -> Self {
        [a[0] + b[0]]
    }
    fn sub(a: Self, b: Self) -> Self {
        [a[0] - b[0]]
    }
    fn half(a: Self) -> Self {
        [a[0] * 0.5]
    }
    fn scale(a: Self, k: f32) -> Self {
        [a[0] * k]
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for __m512 {
    #[inline(always)]
    fn add(a: Self, b: Self) -> Self {
        // SAFETY: only called from AVX-512 functions.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(a: Self, b: Self) -> Self {
        // SAFETY: only called from AVX-512 functions.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn half(a: Self) -> Self {
        // SAFETY: only called from AVX-512 functions.
        unsafe { _mm512_mul_ps(a, _mm512_set1_ps(0.5)) }
    }
    #[inline(always)]
    fn scale(a: Self, k: f32) -> Self {
        // SAFETY: only called from AVX-512 functions.
        unsafe { _mm512_mul_ps(a, _mm512_set1_ps(k)) }
    }
}

/// [`transform_weight`], 16 input channels at a time (a gather of each of the nine taps).
///
/// # Safety
/// AVX-512F present; as [`transform_weight`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_weight_avx512(
    g: &Wino,
    w: *const f32,
    at: WeightAt,
    u: *mut f32,
    o0: usize,
    o1: usize,
) {
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(at.cs as i32),
    );
    // A transformed weight larger than L2 (ResNet's 256- and 512-channel ones: 4 and 16 MiB)
    // goes to memory before its products read it back: written with non-temporal stores,
    // which skip reading each line in first (ResNet-18's layer4 backward-data passes at
    // 224×224: 7.3-7.6 -> 6.5-6.7 ms each). The runtime's U is 64-byte aligned.
    let stream = g.weight_len() * 4 > STREAM_BYTES;
    // The sixteen lanes read g(o, c0..c0 + 16). Read transposed (the backward-data pass: lanes
    // a whole weight row apart), the blocks of c go outermost, so each lane walks its row from
    // start to end as o grows (16 streams the prefetcher follows); with o outermost, each
    // block's first gather missed the cache in 16 rows at once.
    let transposed = at.cs > at.rs;
    let (outer, inner) = if transposed {
        (g.c.div_ceil(16), o1 - o0)
    } else {
        (o1 - o0, g.c.div_ceil(16))
    };
    for a in 0..outer {
        for b in 0..inner {
            let (o, c0) = if transposed {
                (o0 + b, 16 * a)
            } else {
                (o0 + a, 16 * b)
            };
            let len = 16.min(g.c - c0);
            let mask = (0xffffu32 >> (16 - len)) as __mmask16;
            let base = w.wrapping_add(o * at.rs + c0 * at.cs);
            let k: [__m512; 9] = std::array::from_fn(|t| {
                let t = if at.flip { 8 - t } else { t };
                // SAFETY: lanes inside the mask read g(o, c0 + l) at tap t.
                unsafe {
                    _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        mask,
                        lanes,
                        base.wrapping_add(t).cast(),
                    )
                }
            });
            let x = weight_tile_any(g.m, k);
            for (xi, v) in x[..g.xi()].iter().enumerate() {
                let at = u.wrapping_add(xi * g.us() + o * g.c + c0);
                if stream && len == 16 && (at as usize).is_multiple_of(64) {
                    // SAFETY: 16 floats of row o of U[ξ], 64-byte aligned.
                    unsafe { _mm512_stream_ps(at, *v) };
                } else {
                    // SAFETY: len floats of row o of U[ξ].
                    unsafe { _mm512_mask_storeu_ps(at, mask, *v) };
                }
            }
        }
    }
    if stream {
        // Non-temporal stores are weakly ordered: make them visible before the pool tells
        // the other threads this part of U is done.
        _mm_sfence();
    }
}

/// Output tiles `tiles` of `y = conv(x, w)`, `u` the transformed weight. The output is written,
/// never accumulated; pixels outside these tiles are not touched.
///
/// # Safety
/// AVX-512F present ([`super::sgemm::available`]); `x` holds the input batch, `u`
/// [`Wino::weight_len`] floats, `y` the output batch.
#[cfg(target_arch = "x86_64")]
pub unsafe fn conv_tiles(
    g: &Wino,
    x: *const f32,
    u: *const f32,
    y: *mut f32,
    tiles: std::ops::Range<usize>,
) {
    // SAFETY: AVX-512F present; the buffers hold a block; x, u, y by the contract.
    unsafe {
        for_blocks(g, x, tiles, |v, m, (b0, b1), t| {
            for xi in 0..g.xi() {
                let ok = super::sgemm::sgemm_in_place(
                    g.o,
                    b1 - b0,
                    g.c,
                    m.add(xi * g.ms(t)),
                    t as isize,
                    u.add(xi * g.us()),
                    g.c as isize,
                    v.add(xi * g.vs(t)),
                    t as isize,
                );
                debug_assert!(ok);
            }
            for o0 in (0..g.o).step_by(CHANNELS) {
                let os = o0..(o0 + CHANNELS).min(g.o);
                for (run, first) in runs(g, b0, b1) {
                    if g.m == 4 {
                        output_tiles4(g, m.add(first - b0), t, run, os.clone(), y);
                    } else {
                        output_tiles(g, m.add(first - b0), t, run, os.clone(), y);
                    }
                }
            }
        })
    }
}

/// The weight gradient's transformed partial sums over output tiles `tiles`:
/// `du[ξ][o][c] = Σ_t (A·dy_t·Aᵀ)[ξ] · (Bᵀ·d_t·B)[ξ]`, where `dy_t` is tile `t` of the output
/// gradient (2×2, zero past the output's edge) and `d_t` its input tile, as in the forward
/// pass. Per block of tiles, both transforms, then 16 products `Z[ξ] · V[ξ]ᵀ` (output
/// channels × tiles × input channels) added into `du`, for output channels `o0..o1` (rows
/// `o0..o1` of each `du[ξ]` are written; the first block overwrites them). Each sum is one
/// chain over the tiles in order, however the output channels are cut.
/// [`weight_grad_finish`] turns the sums into the gradient.
///
/// # Safety
/// AVX-512F present; `x` the input batch, `dy` the output gradient batch, `du`
/// [`Wino::weight_len`] floats; `tiles` not empty.
#[cfg(target_arch = "x86_64")]
pub unsafe fn weight_grad_tiles(
    g: &Wino,
    x: *const f32,
    dy: *const f32,
    du: *mut f32,
    tiles: std::ops::Range<usize>,
    (lo, hi): (usize, usize),
) {
    // SAFETY: AVX-512F present; the buffers hold a block; x, dy, du by the contract.
    unsafe {
        for_blocks(g, x, tiles.clone(), |v, z, (b0, b1), t| {
            for o0 in (lo..hi).step_by(CHANNELS) {
                let os = o0..(o0 + CHANNELS).min(hi);
                for (run, first) in runs(g, b0, b1) {
                    if g.m == 4 {
                        grad_tiles4(g, dy, run, os.clone(), z.add(first - b0), t);
                    } else {
                        grad_tiles(g, dy, run, os.clone(), z.add(first - b0), t);
                    }
                }
            }
            for xi in 0..g.xi() {
                let ok = super::sgemm::sgemm(
                    hi - lo,
                    g.c,
                    b1 - b0,
                    du.add(xi * g.us() + lo * g.c),
                    g.c as isize,
                    z.add(xi * g.ms(t) + lo * t),
                    t as isize,
                    1,
                    v.add(xi * g.vs(t)),
                    1,
                    t as isize,
                    b0 > tiles.start,
                );
                debug_assert!(ok);
            }
        })
    }
}

/// `Z[ξ][o][l] = (A·dy·Aᵀ)[ξ]` for the output gradient tile `dy` (2×2) of each tile `l` of
/// `run` and output channels `channels`; `z` points at the run's first column, rows `t`
/// floats apart. `A = [[1, 0], [1, 1], [1, -1], [0, -1]]`.
///
/// # Safety
/// AVX-512F present; `dy` the output gradient batch; `z` the block's columns for this run.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_tiles(
    g: &Wino,
    dy: *const f32,
    run: Run,
    channels: std::ops::Range<usize>,
    z: *mut f32,
    t: usize,
) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let store = lane_mask(0, run.len as isize);
    let ox = 2 * run.tx;
    let cols = (2 * run.len).min(g.ow - ox) as isize;
    let (mlo, mhi) = (lane_mask(0, cols), lane_mask(0, cols - 16));
    let rows = (g.oh - 2 * run.ty).min(2);
    let zero = _mm512_setzero_ps();
    for o in channels {
        let plane = dy.wrapping_add((run.n * g.o + o) * g.oh * g.ow);
        let mut d = [[zero; 2]; 2];
        for (i, row) in d.iter_mut().enumerate().take(rows) {
            let p = plane.wrapping_add((2 * run.ty + i) * g.ow + ox);
            // SAFETY: the masks keep the loads inside this output row.
            let (a0, a1) = unsafe {
                (
                    _mm512_maskz_loadu_ps(mlo, p),
                    _mm512_maskz_loadu_ps(mhi, p.wrapping_add(16)),
                )
            };
            *row = [
                _mm512_permutex2var_ps(a0, even, a1),
                _mm512_permutex2var_ps(a0, odd, a1),
            ];
        }
        // A·dy (4×2), then ·Aᵀ (4×4).
        let mut e = [[zero; 2]; 4];
        for j in 0..2 {
            let (d0, d1) = (d[0][j], d[1][j]);
            e[0][j] = d0;
            e[1][j] = _mm512_add_ps(d0, d1);
            e[2][j] = _mm512_sub_ps(d0, d1);
            e[3][j] = _mm512_sub_ps(zero, d1);
        }
        for (r, er) in e.iter().enumerate() {
            let out = [
                er[0],
                _mm512_add_ps(er[0], er[1]),
                _mm512_sub_ps(er[0], er[1]),
                _mm512_sub_ps(zero, er[1]),
            ];
            for (col, val) in out.iter().enumerate() {
                let xi = 4 * r + col;
                // SAFETY: run.len columns of row (ξ, o) of the block.
                unsafe { _mm512_mask_storeu_ps(z.add(xi * g.ms(t) + o * t), store, *val) };
            }
        }
    }
}

/// `dw[o][c] = Gᵀ·(Σ_p parts[p][·][o][c])·G` (3×3, row-major `[o][c][3][3]`, written) for
/// output channels `o0..o1`: the weight gradient from [`weight_grad_tiles`]' partial sums,
/// added in the order given.
///
/// # Safety
/// Each part holds [`Wino::weight_len`] floats; `dw` holds `o · c · 9`.
pub unsafe fn weight_grad_finish(
    g: &Wino,
    parts: &[*const f32],
    dw: *mut f32,
    o0: usize,
    o1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX-512F present; extents forwarded.
        unsafe { weight_grad_finish_avx512(g, parts, dw, o0, o1) };
        return;
    }
    for o in o0..o1 {
        for c in 0..g.c {
            let u: [[f32; 1]; XI_MAX] = std::array::from_fn(|xi| {
                let at = xi % g.xi() * g.us() + o * g.c + c;
                // SAFETY: inside each part (contract).
                [parts.iter().fold(0.0f32, |a, p| a + unsafe { *p.add(at) })]
            });
            for (k, v) in weight_grad_tile_any(g.m, u).iter().enumerate() {
                // SAFETY: inside dw (contract).
                unsafe { *dw.add((o * g.c + c) * 9 + k) = v[0] };
            }
        }
    }
}

/// [`weight_grad_finish`], 16 input channels at a time (a scatter per tap).
///
/// # Safety
/// AVX-512F present; as [`weight_grad_finish`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_finish_avx512(
    g: &Wino,
    parts: &[*const f32],
    dw: *mut f32,
    o0: usize,
    o1: usize,
) {
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(9),
    );
    for o in o0..o1 {
        for c0 in (0..g.c).step_by(16) {
            let len = 16.min(g.c - c0);
            let mask = (0xffffu32 >> (16 - len)) as __mmask16;
            let u: [__m512; XI_MAX] = std::array::from_fn(|xi| {
                let at = xi % g.xi() * g.us() + o * g.c + c0;
                parts.iter().fold(_mm512_setzero_ps(), |a, p| {
                    // SAFETY: len floats of row (ξ, o) of each part (contract).
                    _mm512_add_ps(a, unsafe { _mm512_maskz_loadu_ps(mask, p.add(at)) })
                })
            });
            let base = dw.wrapping_add((o * g.c + c0) * 9);
            for (k, v) in weight_grad_tile_any(g.m, u).iter().enumerate() {
                // SAFETY: lanes inside the mask write dw[o][c0 + l][k].
                unsafe {
                    _mm512_mask_i32scatter_ps::<4>(base.wrapping_add(k).cast(), mask, lanes, *v)
                };
            }
        }
    }
}

/// `Gᵀ·u·G` of either form (`u` in its first `(m + 2)²` entries).
#[inline(always)]
fn weight_grad_tile_any<T: Copy + Lanes>(m: usize, u: [T; XI_MAX]) -> [T; 9] {
    if m == 4 {
        return weight_grad_tile6(u);
    }
    weight_grad_tile(std::array::from_fn(|i| u[i]))
}

/// `Gᵀ·v` (6 → 3) for F(4×4, 3×3)'s `G` (see [`weight_tile6`]); a function so that it
/// inlines into the AVX-512 callers.
#[inline(always)]
fn gt6<T: Copy + Lanes>(v: [T; 6]) -> [T; 3] {
    let (s12, d21) = (T::add(v[1], v[2]), T::sub(v[2], v[1]));
    let (s34, d34) = (T::add(v[3], v[4]), T::sub(v[3], v[4]));
    let m12 = T::scale(s12, -1.0 / 6.0);
    [
        T::add(T::add(T::scale(v[0], 0.25), m12), T::scale(s34, 1.0 / 24.0)),
        T::add(T::scale(d21, 1.0 / 6.0), T::scale(d34, 1.0 / 12.0)),
        T::add(T::add(m12, T::scale(s34, 1.0 / 6.0)), v[5]),
    ]
}

/// F(4×4, 3×3)'s `Gᵀ·u·G` (6×6 → 3×3), `G` as in [`weight_tile6`].
#[inline(always)]
fn weight_grad_tile6<T: Copy + Lanes>(u: [T; XI_MAX]) -> [T; 9] {
    // Rows: Gᵀ·u (3×6).
    let mut r = [[u[0]; 6]; 3];
    for j in 0..6 {
        let col = gt6(std::array::from_fn(|i| u[6 * i + j]));
        for i in 0..3 {
            r[i][j] = col[i];
        }
    }
    // Columns: (Gᵀ·u)·G (3×3).
    let mut w = [u[0]; 9];
    for i in 0..3 {
        let row = gt6(r[i]);
        w[3 * i..3 * i + 3].copy_from_slice(&row);
    }
    w
}

/// `Gᵀ·u·G` (4×4 → 3×3) with `Gᵀ = [[1, ½, ½, 0], [0, ½, -½, 0], [0, ½, ½, 1]]`.
#[inline(always)]
fn weight_grad_tile<T: Copy + Lanes>(u: [T; 16]) -> [T; 9] {
    // Rows: Gᵀ·u (3×4).
    let mut r = [[u[0]; 4]; 3];
    for j in 0..4 {
        let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
        let (s, m) = (T::half(T::add(b, c)), T::half(T::sub(b, c)));
        r[0][j] = T::add(a, s);
        r[1][j] = m;
        r[2][j] = T::add(s, d);
    }
    // Columns: (Gᵀ·u)·G (3×3).
    let mut w = [u[0]; 9];
    for i in 0..3 {
        let (a, b, c, d) = (r[i][0], r[i][1], r[i][2], r[i][3]);
        let (s, m) = (T::half(T::add(b, c)), T::half(T::sub(b, c)));
        w[3 * i] = T::add(a, s);
        w[3 * i + 1] = m;
        w[3 * i + 2] = T::add(s, d);
    }
    w
}

/// Runs `f(v, m, (b0, b1), t)` for each block `b0..b1` of at most `t = g.block()` tiles of
/// `tiles`, in order, with this thread's block buffers (grown as needed, reused across calls;
/// rows `t` floats apart): `v` already holds the block's transformed inputs (`16·c·t` floats),
/// `m` is for the products or the output gradient's transforms (`16·o·t`).
///
/// # Safety
/// AVX-512F present; `x` the input batch; `f` keeps to the buffers' extents.
#[cfg(target_arch = "x86_64")]
unsafe fn for_blocks(
    g: &Wino,
    x: *const f32,
    tiles: std::ops::Range<usize>,
    mut f: impl FnMut(*mut f32, *mut f32, (usize, usize), usize),
) {
    let t = g.block();
    SCRATCH.with(|s| {
        let (vbuf, mbuf) = &mut *s.borrow_mut();
        for (buf, len) in [
            (&mut *vbuf, g.xi() * g.vs(t)),
            (&mut *mbuf, g.xi() * g.ms(t)),
        ] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        let (v, m) = (vbuf.as_mut_ptr(), mbuf.as_mut_ptr());
        let mut b0 = tiles.start;
        while b0 < tiles.end {
            let b1 = (b0 + t).min(tiles.end);
            // SAFETY: forwarded; the block has at most t tiles.
            unsafe { input_block(g, x, (b0, b1), v, t) };
            f(v, m, (b0, b1), t);
            b0 = b1;
        }
    })
}

/// The input transform of tiles `b0..b1` into the block `v` (rows `t` floats apart):
/// channels outer, runs inner, so each channel's input rows and transformed rows are read and
/// written in order (prefetcher-friendly streams).
///
/// # Safety
/// AVX-512F present; `x` the input batch; `v` holds `16·c·t` floats; `b1 - b0 <= t`.
#[cfg(target_arch = "x86_64")]
unsafe fn input_block(g: &Wino, x: *const f32, (b0, b1): (usize, usize), v: *mut f32, t: usize) {
    for c0 in (0..g.c).step_by(CHANNELS) {
        let cs = c0..(c0 + CHANNELS).min(g.c);
        for (run, first) in runs(g, b0, b1) {
            // SAFETY: forwarded; the run's columns lie inside the block.
            unsafe {
                if g.m == 4 {
                    input_tiles4(g, x, run, cs.clone(), v.add(first - b0), t)
                } else {
                    input_tiles(g, x, run, cs.clone(), v.add(first - b0), t)
                }
            };
        }
    }
}

/// Up to 16 consecutive tiles of one tile row: image, tile row, first tile column, count.
#[derive(Clone, Copy)]
struct Run {
    n: usize,
    ty: usize,
    tx: usize,
    len: usize,
}

/// The runs covering tiles `b0..b1`, each with its first tile's number.
fn runs(g: &Wino, b0: usize, b1: usize) -> impl Iterator<Item = (Run, usize)> + '_ {
    let mut t = b0;
    std::iter::from_fn(move || {
        if t >= b1 {
            return None;
        }
        let img = g.image_tiles();
        let (n, r) = (t / img, t % img);
        let (ty, tx) = (r / g.tw, r % g.tw);
        let len = 16.min(g.tw - tx).min(b1 - t);
        let first = t;
        t += len;
        Some((Run { n, ty, tx, len }, first))
    })
}

/// `V[ξ][c][l] = (Bᵀ·d·B)[ξ]` for the input tile `d` of each tile `l` of `run`, every input
/// channel `c`; `v` points at the run's first column, rows `t` floats apart.
/// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
///
/// # Safety
/// AVX-512F present; `x` the input batch; `v` the block's columns for this run.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles(
    g: &Wino,
    x: *const f32,
    run: Run,
    channels: std::ops::Range<usize>,
    v: *mut f32,
    t: usize,
) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let store = lane_mask(0, run.len as isize);
    let xs = (2 * run.tx) as isize - g.pl as isize;
    let w = g.w as isize;
    // Valid lanes of a load of 16 floats starting at column xs + off.
    let valid = |off: isize| lane_mask(-(xs + off), w - (xs + off));
    let masks = [valid(0), valid(16), valid(2), valid(18)];
    let y0 = (2 * run.ty) as isize - g.pt as isize;
    for c in channels {
        let plane = x.wrapping_add((run.n * g.c + c) * g.h * g.w);
        let mut d = [[_mm512_setzero_ps(); 4]; 4];
        for (i, row) in d.iter_mut().enumerate() {
            let yy = y0 + i as isize;
            if yy < 0 || yy >= g.h as isize {
                continue;
            }
            let p = plane.wrapping_offset(yy * w + xs);
            // SAFETY: masked loads touch only columns inside the row.
            let [a0, a1, b0, b1] = [0, 16, 2, 18].map(|off| unsafe {
                _mm512_maskz_loadu_ps(masks[off_index(off)], p.wrapping_offset(off))
            });
            *row = [
                _mm512_permutex2var_ps(a0, even, a1),
                _mm512_permutex2var_ps(a0, odd, a1),
                _mm512_permutex2var_ps(b0, even, b1),
                _mm512_permutex2var_ps(b0, odd, b1),
            ];
        }
        // Bᵀ·d (rows), then ·B (columns).
        let mut e = [[_mm512_setzero_ps(); 4]; 4];
        for j in 0..4 {
            let (d0, d1, d2, d3) = (d[0][j], d[1][j], d[2][j], d[3][j]);
            e[0][j] = _mm512_sub_ps(d0, d2);
            e[1][j] = _mm512_add_ps(d1, d2);
            e[2][j] = _mm512_sub_ps(d2, d1);
            e[3][j] = _mm512_sub_ps(d1, d3);
        }
        for (r, er) in e.iter().enumerate() {
            let out = [
                _mm512_sub_ps(er[0], er[2]),
                _mm512_add_ps(er[1], er[2]),
                _mm512_sub_ps(er[2], er[1]),
                _mm512_sub_ps(er[1], er[3]),
            ];
            for (col, val) in out.iter().enumerate() {
                let xi = 4 * r + col;
                // SAFETY: run.len columns of row (ξ, c) of the block.
                unsafe { _mm512_mask_storeu_ps(v.add(xi * g.vs(t) + c * t), store, *val) };
            }
        }
    }
}

/// Index into the load masks of [`input_tiles`] by column offset.
#[inline(always)]
fn off_index(off: isize) -> usize {
    match off {
        0 => 0,
        16 => 1,
        2 => 2,
        _ => 3,
    }
}

/// `y` for each tile of `run` and every output channel: `Aᵀ·M·A` with
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`; `m` points at the run's first column of the block's
/// products, rows `t` floats apart. Pixels past the output's edge are not written.
///
/// # Safety
/// AVX-512F present; `m` the block's products; `y` the output batch.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_tiles(
    g: &Wino,
    m: *const f32,
    t: usize,
    run: Run,
    channels: std::ops::Range<usize>,
    y: *mut f32,
) {
    let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let load = lane_mask(0, run.len as isize);
    let ox = 2 * run.tx;
    let cols = (2 * run.len).min(g.ow - ox) as isize;
    let (mlo, mhi) = (lane_mask(0, cols), lane_mask(0, cols - 16));
    let rows = (g.oh - 2 * run.ty).min(2);
    for o in channels {
        // SAFETY: run.len columns of row (ξ, o) of the block's products.
        let mv: [__m512; 16] = std::array::from_fn(|xi| unsafe {
            _mm512_maskz_loadu_ps(load, m.add(xi * g.ms(t) + o * t))
        });
        let mut s = [[_mm512_setzero_ps(); 4]; 2];
        for j in 0..4 {
            let (m0, m1, m2, m3) = (mv[j], mv[4 + j], mv[8 + j], mv[12 + j]);
            s[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        for (i, si) in s.iter().enumerate().take(rows) {
            let y0 = _mm512_add_ps(_mm512_add_ps(si[0], si[1]), si[2]);
            let y1 = _mm512_sub_ps(_mm512_sub_ps(si[1], si[2]), si[3]);
            let dst = y.wrapping_add(((run.n * g.o + o) * g.oh + 2 * run.ty + i) * g.ow + ox);
            // SAFETY: the masks keep the stores inside this output row.
            unsafe {
                _mm512_mask_storeu_ps(dst, mlo, _mm512_permutex2var_ps(y0, lo_idx, y1));
                _mm512_mask_storeu_ps(
                    dst.wrapping_add(16),
                    mhi,
                    _mm512_permutex2var_ps(y0, hi_idx, y1),
                );
            }
        }
    }
}

/// Lanes `j, j+4, …, j+28` of the 32 floats of a pair of vectors into lanes 0..8 (and again
/// in 8..16): with [`quarter`], every fourth float of 64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stride4_index(j: i32) -> __m512i {
    // SAFETY: plain register setup (SSE2 at least on x86-64; AVX-512 callers only).
    unsafe {
        _mm512_setr_epi32(
            j,
            j + 4,
            j + 8,
            j + 12,
            j + 16,
            j + 20,
            j + 24,
            j + 28,
            j,
            j + 4,
            j + 8,
            j + 12,
            j + 16,
            j + 20,
            j + 24,
            j + 28,
        )
    }
}

/// [`stride4_index`] of 0, 1, 2 and 3 (written out, not mapped: a closure would keep the
/// intrinsic out of line).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stride4_indices() -> [__m512i; 4] {
    [
        stride4_index(0),
        stride4_index(1),
        stride4_index(2),
        stride4_index(3),
    ]
}

/// Floats `j, j+4, …, j+60` of the 64 in `a` (four vectors), `idx = stride4_index(j)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn quarter(a: &[__m512; 4], idx: __m512i) -> __m512 {
    let lo = _mm512_permutex2var_ps(a[0], idx, a[1]);
    let hi = _mm512_permutex2var_ps(a[2], idx, a[3]);
    _mm512_shuffle_f32x4::<0x44>(lo, hi)
}

/// F(4×4, 3×3)'s `Bᵀ·d` on a column of six, with
/// `Bᵀ = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
///        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn bt6(d: [__m512; 6]) -> [__m512; 6] {
    let (k2, k4, k5) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(5.0),
    );
    let a = _mm512_fnmadd_ps(k4, d[2], d[4]);
    let b = _mm512_fnmadd_ps(k4, d[1], d[3]);
    let c = _mm512_sub_ps(d[4], d[2]);
    let e = _mm512_sub_ps(d[3], d[1]);
    [
        _mm512_fmadd_ps(k4, d[0], _mm512_fnmadd_ps(k5, d[2], d[4])),
        _mm512_add_ps(a, b),
        _mm512_sub_ps(a, b),
        _mm512_fmadd_ps(k2, e, c),
        _mm512_fnmadd_ps(k2, e, c),
        _mm512_fmadd_ps(k4, d[1], _mm512_fnmadd_ps(k5, d[3], d[5])),
    ]
}

/// F(4×4, 3×3)'s `Aᵀ·m` on a column of six, with
/// `Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn at6(m: [__m512; 6]) -> [__m512; 4] {
    let (p, q) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (r, s) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], p), r),
        _mm512_fmadd_ps(_mm512_set1_ps(2.0), s, q),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), r, p),
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), s, q), m[5]),
    ]
}

/// F(4×4, 3×3)'s `A·dy` on a column of four (`A` = `Aᵀ` of [`at6`] transposed).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn a6(d: [__m512; 4]) -> [__m512; 6] {
    let (k2, k4) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0));
    let (e, o) = (_mm512_add_ps(d[0], d[2]), _mm512_add_ps(d[1], d[3]));
    let e4 = _mm512_fmadd_ps(k4, d[2], d[0]);
    let o4 = _mm512_fmadd_ps(k4, d[3], d[1]);
    [
        d[0],
        _mm512_add_ps(e, o),
        _mm512_sub_ps(e, o),
        _mm512_fmadd_ps(k2, o4, e4),
        _mm512_fnmadd_ps(k2, o4, e4),
        d[3],
    ]
}

/// [`input_tiles`] for F(4×4, 3×3): `V[ξ][c][l] = (Bᵀ·d·B)[ξ]` for the 6×6 input tile `d` of
/// each tile `l` of `run` (tiles 4 columns apart: each input row is loaded as 64 + 2 floats
/// and split into its six columns of every fourth float with permutes).
///
/// # Safety
/// As [`input_tiles`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles4(
    g: &Wino,
    x: *const f32,
    run: Run,
    channels: std::ops::Range<usize>,
    v: *mut f32,
    t: usize,
) {
    let idx = stride4_indices();
    let store = lane_mask(0, run.len as isize);
    let xs = (4 * run.tx) as isize - g.pl as isize;
    let w = g.w as isize;
    const OFFS: [isize; 6] = [0, 16, 32, 48, 64, 65];
    // Valid lanes of a load of 16 floats starting at column xs + off.
    let masks = OFFS.map(|off| lane_mask(-(xs + off), w - (xs + off)));
    let y0 = (4 * run.ty) as isize - g.pt as isize;
    let zero = _mm512_setzero_ps();
    for c in channels {
        let plane = x.wrapping_add((run.n * g.c + c) * g.h * g.w);
        let mut d = [[zero; 6]; 6];
        for (i, row) in d.iter_mut().enumerate() {
            let yy = y0 + i as isize;
            if yy < 0 || yy >= g.h as isize {
                continue;
            }
            let p = plane.wrapping_offset(yy * w + xs);
            // SAFETY: masked loads touch only columns inside the row.
            let a: [__m512; 6] = std::array::from_fn(|q| unsafe {
                _mm512_maskz_loadu_ps(masks[q], p.wrapping_offset(OFFS[q]))
            });
            let head = [a[0], a[1], a[2], a[3]];
            let c0 = quarter(&head, idx[0]);
            let c1 = quarter(&head, idx[1]);
            // Columns 4 and 5: columns 0 and 1 one tile on (the last lane from the row's
            // floats 64 and 65).
            let c4 = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(a[4]),
                _mm512_castps_si512(c0),
            ));
            let c5 = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(a[5]),
                _mm512_castps_si512(c1),
            ));
            *row = [
                c0,
                c1,
                quarter(&head, idx[2]),
                quarter(&head, idx[3]),
                c4,
                c5,
            ];
        }
        // Bᵀ·d (rows), then ·B (columns).
        let mut e = [[zero; 6]; 6];
        for j in 0..6 {
            let col = bt6(std::array::from_fn(|i| d[i][j]));
            for (r, v) in col.into_iter().enumerate() {
                e[r][j] = v;
            }
        }
        for (r, er) in e.into_iter().enumerate() {
            for (col, val) in bt6(er).into_iter().enumerate() {
                let xi = 6 * r + col;
                // SAFETY: run.len columns of row (ξ, c) of the block.
                unsafe { _mm512_mask_storeu_ps(v.add(xi * g.vs(t) + c * t), store, val) };
            }
        }
    }
}

/// [`output_tiles`] for F(4×4, 3×3): `y = Aᵀ·M·A` (4×4 per tile), each output row of a run
/// interleaved back from its four columns with permutes.
///
/// # Safety
/// As [`output_tiles`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_tiles4(
    g: &Wino,
    m: *const f32,
    t: usize,
    run: Run,
    channels: std::ops::Range<usize>,
    y: *mut f32,
) {
    let pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let quad_lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    let quad_hi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    let load = lane_mask(0, run.len as isize);
    let ox = 4 * run.tx;
    let cols = (4 * run.len).min(g.ow - ox) as isize;
    let masks = [0, 16, 32, 48].map(|q| lane_mask(0, cols - q));
    let rows = (g.oh - 4 * run.ty).min(4);
    for o in channels {
        // SAFETY: run.len columns of row (ξ, o) of the block's products.
        let mv: [__m512; 36] = std::array::from_fn(|xi| unsafe {
            _mm512_maskz_loadu_ps(load, m.add(xi * g.ms(t) + o * t))
        });
        // Aᵀ·M (4×6), then ·A (4×4).
        let mut s = [[_mm512_setzero_ps(); 6]; 4];
        for j in 0..6 {
            for (i, v) in at6(std::array::from_fn(|r| mv[6 * r + j]))
                .into_iter()
                .enumerate()
            {
                s[i][j] = v;
            }
        }
        for (i, si) in s.iter().enumerate().take(rows) {
            let [y0, y1, y2, y3] = at6(*si);
            let (p01, p01h) = (
                _mm512_permutex2var_ps(y0, pair_lo, y1),
                _mm512_permutex2var_ps(y0, pair_hi, y1),
            );
            let (p23, p23h) = (
                _mm512_permutex2var_ps(y2, pair_lo, y3),
                _mm512_permutex2var_ps(y2, pair_hi, y3),
            );
            let out = [
                _mm512_permutex2var_ps(p01, quad_lo, p23),
                _mm512_permutex2var_ps(p01, quad_hi, p23),
                _mm512_permutex2var_ps(p01h, quad_lo, p23h),
                _mm512_permutex2var_ps(p01h, quad_hi, p23h),
            ];
            let dst = y.wrapping_add(((run.n * g.o + o) * g.oh + 4 * run.ty + i) * g.ow + ox);
            for (q, v) in out.into_iter().enumerate() {
                // SAFETY: the masks keep the stores inside this output row.
                unsafe { _mm512_mask_storeu_ps(dst.wrapping_add(16 * q), masks[q], v) };
            }
        }
    }
}

/// [`grad_tiles`] for F(4×4, 3×3): `Z[ξ][o][l] = (A·dy·Aᵀ)[ξ]` for the 4×4 output gradient
/// tile of each tile `l` of `run` (zero past the output's edge).
///
/// # Safety
/// As [`grad_tiles`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_tiles4(
    g: &Wino,
    dy: *const f32,
    run: Run,
    channels: std::ops::Range<usize>,
    z: *mut f32,
    t: usize,
) {
    let idx = stride4_indices();
    let store = lane_mask(0, run.len as isize);
    let ox = 4 * run.tx;
    let cols = (4 * run.len).min(g.ow - ox) as isize;
    let masks = [0, 16, 32, 48].map(|q| lane_mask(0, cols - q));
    let rows = (g.oh - 4 * run.ty).min(4);
    let zero = _mm512_setzero_ps();
    for o in channels {
        let plane = dy.wrapping_add((run.n * g.o + o) * g.oh * g.ow);
        let mut d = [[zero; 4]; 4];
        for (i, row) in d.iter_mut().enumerate().take(rows) {
            let p = plane.wrapping_add((4 * run.ty + i) * g.ow + ox);
            // SAFETY: the masks keep the loads inside this output row.
            let a: [__m512; 4] = std::array::from_fn(|q| unsafe {
                _mm512_maskz_loadu_ps(masks[q], p.wrapping_add(16 * q))
            });
            *row = idx.map(|ix| quarter(&a, ix));
        }
        // A·dy (6×4), then ·Aᵀ (6×6).
        let mut e = [[zero; 4]; 6];
        for j in 0..4 {
            for (r, v) in a6(std::array::from_fn(|i| d[i][j])).into_iter().enumerate() {
                e[r][j] = v;
            }
        }
        for (r, er) in e.into_iter().enumerate() {
            for (col, val) in a6(er).into_iter().enumerate() {
                let xi = 6 * r + col;
                // SAFETY: run.len columns of row (ξ, o) of the block.
                unsafe { _mm512_mask_storeu_ps(z.add(xi * g.ms(t) + o * t), store, val) };
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::runtime::contraction::tests::Rng;

    /// The geometry of a 3×3 stride-1 convolution (`Wino::of` must take it).
    fn geometry(n: usize, c: usize, (h, w): (usize, usize), o: usize, padding: [usize; 4]) -> Wino {
        Wino::of(&ContractionKind::Conv2d {
            n,
            c,
            h,
            w,
            o,
            kernel: [3, 3],
            stride: [1, 1],
            padding,
            dilation: [1, 1],
            groups: 1,
        })
        .expect("a Winograd geometry")
    }

    /// The convolution by its definition, in f64.
    fn reference(g: &Wino, x: &[f32], w: &[f32], at: WeightAt, pad: [usize; 2]) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.o * g.oh * g.ow];
        for n in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0f64;
                        for c in 0..g.c {
                            for ki in 0..3 {
                                for kj in 0..3 {
                                    let iy = (oy + ki) as isize - pad[0] as isize;
                                    let ix = (ox + kj) as isize - pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let tap = 3 * ki + kj;
                                    let tap = if at.flip { 8 - tap } else { tap };
                                    let wv = w[o * at.rs + c * at.cs + tap] as f64;
                                    let xv = x
                                        [((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize]
                                        as f64;
                                    s += wv * xv;
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn winograd_matches_the_definition() {
        if !crate::runtime::sgemm::available() {
            return;
        }
        let mut rng = Rng(0x9e3779b9);
        // (n, c, h, w, o, padding [t, b, l, r], flipped weight, tile split)
        let cases = [
            (1, 3, 5, 5, 2, [1, 1, 1, 1], false, 1),
            (2, 17, 9, 13, 19, [1, 1, 1, 1], false, 3),
            (3, 5, 7, 7, 33, [0, 0, 0, 0], false, 2),
            (1, 20, 11, 37, 7, [2, 1, 0, 2], false, 1),
            (2, 9, 6, 40, 5, [1, 2, 2, 1], true, 4),
            (4, 31, 8, 8, 65, [1, 1, 1, 1], true, 5),
            (1, 64, 17, 35, 70, [1, 1, 1, 1], false, 2),
            // A large transposed weight (as ResNet's 256-channel backward-data passes),
            // written with non-temporal stores (rows 64-byte aligned or not), and one whose
            // rows all are.
            (1, 257, 4, 6, 260, [1, 1, 1, 1], true, 3),
            (1, 256, 4, 6, 256, [1, 1, 1, 1], true, 2),
        ];
        for ((n, c, h, w, o, padding, flip, split), m) in
            cases.into_iter().flat_map(|case| [(case, 2), (case, 4)])
        {
            let g = geometry(n, c, (h, w), o, padding).with_tile(m);
            // The flipped case reads a transposed [c][o] weight, as the backward-data pass.
            let at = if flip {
                WeightAt {
                    rs: 9,
                    cs: 9 * o,
                    flip,
                }
            } else {
                WeightAt {
                    rs: 9 * c,
                    cs: 9,
                    flip,
                }
            };
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.next()).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|_| rng.next()).collect();
            // U 64-byte aligned, as the runtime gives it (so large ones stream).
            let mut u_buf = vec![0f32; g.weight_len() + 16];
            let skew = u_buf.as_ptr().align_offset(64);
            let u = &mut u_buf[skew..skew + g.weight_len()];
            let mut u_scalar = vec![0f32; g.weight_len()];
            unsafe { transform_weight(&g, wt.as_ptr(), at, u.as_mut_ptr(), 0, o) };
            // The scalar transform agrees with the vector one.
            for oc in 0..o {
                for cc in 0..c {
                    let mut k = [0f32; 9];
                    for (tp, v) in k.iter_mut().enumerate() {
                        let tp = if flip { 8 - tp } else { tp };
                        *v = wt[oc * at.rs + cc * at.cs + tp];
                    }
                    let x = weight_tile_any(m, k.map(|v| [v]));
                    for (xi, v) in x[..g.xi()].iter().enumerate() {
                        u_scalar[xi * g.us() + oc * c + cc] = v[0];
                    }
                }
            }
            assert_eq!(u, u_scalar);
            let mut y = vec![f32::NAN; n * o * g.oh * g.ow];
            let total = n * g.image_tiles();
            let per = total.div_ceil(split);
            for s in 0..split {
                let r = (s * per).min(total)..((s + 1) * per).min(total);
                unsafe { conv_tiles(&g, x.as_ptr(), u.as_ptr(), y.as_mut_ptr(), r) };
            }
            let want = reference(&g, &x, &wt, at, [padding[0], padding[2]]);
            let mut worst = 0f64;
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (c as f64 * 9.0).sqrt() * 4.0;
                worst = worst.max((*a as f64 - b).abs() / (c as f64 * 9.0).sqrt());
                assert!(
                    (*a as f64 - b).abs() <= tol,
                    "F({m}) case n{n} c{c} {h}x{w} o{o} pad {padding:?} flip {flip}: y[{i}] = {a}, want {b}"
                );
            }
            eprintln!("F({m}) n{n} c{c} {h}x{w} o{o}: worst error / sqrt(9c) {worst:.2e}");
        }
    }

    #[test]
    fn winograd_weight_gradient_matches_the_definition() {
        if !crate::runtime::sgemm::available() {
            return;
        }
        let mut rng = Rng(0x2545f491);
        // (n, c, h, w, o, padding [t, b, l, r], parts)
        let cases = [
            (1, 3, 5, 5, 2, [1, 1, 1, 1], 1),
            (2, 17, 9, 13, 19, [1, 1, 1, 1], 3),
            (3, 5, 7, 8, 33, [0, 0, 0, 0], 2),
            (1, 20, 11, 37, 7, [2, 1, 0, 2], 1),
            (4, 31, 8, 9, 65, [1, 1, 1, 1], 5),
            (2, 64, 17, 35, 70, [1, 2, 1, 0], 2),
        ];
        for ((n, c, h, w, o, padding, parts), m) in
            cases.into_iter().flat_map(|case| [(case, 2), (case, 4)])
        {
            let g = geometry(n, c, (h, w), o, padding).with_tile(m);
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.next()).collect();
            let dy: Vec<f32> = (0..n * o * g.oh * g.ow).map(|_| rng.next()).collect();
            let total = n * g.image_tiles();
            let per = total.div_ceil(parts);
            let mut bufs = Vec::new();
            for p in 0..parts {
                let r = (p * per).min(total)..((p + 1) * per).min(total);
                if r.is_empty() {
                    continue;
                }
                let mut du = vec![f32::NAN; g.weight_len()];
                unsafe {
                    weight_grad_tiles(&g, x.as_ptr(), dy.as_ptr(), du.as_mut_ptr(), r, (0, o))
                };
                bufs.push(du);
            }
            let ptrs: Vec<*const f32> = bufs.iter().map(|b| b.as_ptr()).collect();
            let mut dw = vec![f32::NAN; o * c * 9];
            unsafe { weight_grad_finish(&g, &ptrs, dw.as_mut_ptr(), 0, o) };
            let mut dw_scalar = vec![f32::NAN; o * c * 9];
            for oc in 0..o {
                for cc in 0..c {
                    let u: [[f32; 1]; XI_MAX] = std::array::from_fn(|xi| {
                        let xi = xi % g.xi();
                        [bufs
                            .iter()
                            .fold(0.0, |a, b| a + b[xi * g.us() + oc * c + cc])]
                    });
                    for (k, v) in weight_grad_tile_any(m, u).iter().enumerate() {
                        dw_scalar[(oc * c + cc) * 9 + k] = v[0];
                    }
                }
            }
            assert_eq!(dw, dw_scalar, "vector and scalar transforms");
            let (pt, pl) = (padding[0], padding[2]);
            for oc in 0..o {
                for cc in 0..c {
                    for ki in 0..3 {
                        for kj in 0..3 {
                            let mut want = 0f64;
                            for b in 0..n {
                                for oy in 0..g.oh {
                                    for ox in 0..g.ow {
                                        let iy = (oy + ki) as isize - pt as isize;
                                        let ix = (ox + kj) as isize - pl as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        want += dy[((b * o + oc) * g.oh + oy) * g.ow + ox] as f64
                                            * x[((b * c + cc) * h + iy as usize) * w + ix as usize]
                                                as f64;
                                    }
                                }
                            }
                            let got = dw[(oc * c + cc) * 9 + ki * 3 + kj] as f64;
                            let tol = 1e-5 * ((n * g.oh * g.ow) as f64).sqrt() * 4.0;
                            assert!(
                                (got - want).abs() <= tol,
                                "F({m}) case n{n} c{c} {h}x{w} o{o} pad {padding:?}: dw[{oc}][{cc}][{ki}][{kj}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
