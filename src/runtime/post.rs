//! A convolution's epilogue applied as its product is stored ("post-op"), so the result never
//! goes to memory raw and comes back for a separate pass.
//!
//! In: the fused epilogue of a convolution ([`LoopKernel`] over its output `[N, O, OH, OW]`,
//! access 0 the raw product) and the addresses of its inputs. Out: a [`PostOp`] when the
//! program is the chain `relu?((raw + bias[o]) + residual[n, o, y, x])` (each part optional,
//! the additions in either operand order), which per image and block of output channels gives
//! a [`Post`]: pointers the GEMM microkernel ([`super::sgemm`]) applies to its register tile
//! on the last slice of `k`, and [`copy_post`] applies where a product is copied out of a
//! scratch tile. Other epilogues keep running as generated code after the product.
//!
//! The values are bit for bit those of the generated code: the same IEEE additions in the same
//! order, and ReLU as `maxps(0, x)` (`maxps` returns its second operand for a NaN and for two
//! zeros, so NaN and -0 stay, as the generated `x < 0 ? 0 : x` and PyTorch's relu).

use crate::fuse::kernel::{Access, LoopKernel, Scalar};
use crate::graph::{BinaryOp, UnaryOp};

/// An epilogue at one block of the output: row `i` (an output channel) and column `j` (a
/// pixel) of the block become `relu?((v + bias[i·bias_rs]) + res[i·res_rs + j])`; a null
/// pointer leaves that addition out.
#[derive(Clone, Copy, Debug)]
pub struct Post {
    pub bias: *const f32,
    pub bias_rs: isize,
    pub res: *const f32,
    pub res_rs: isize,
    pub relu: bool,
}

impl Post {
    /// The same epilogue for the block starting at row `i`, column `j` of this one.
    pub fn at(self, i: usize, j: usize) -> Post {
        Post {
            bias: if self.bias.is_null() {
                self.bias
            } else {
                self.bias.wrapping_offset(i as isize * self.bias_rs)
            },
            res: if self.res.is_null() {
                self.res
            } else {
                self.res
                    .wrapping_offset(i as isize * self.res_rs + j as isize)
            },
            ..self
        }
    }

    /// `relu?((v + bias) + res)` for one element whose row's bias is `bias` and residual `res`:
    /// the scalar form ([`copy_post`]'s fallback, and the tests' reference).
    pub fn value(self, v: f32, bias: Option<f32>, res: Option<f32>) -> f32 {
        let mut v = v;
        if let Some(b) = bias {
            v += b;
        }
        if let Some(r) = res {
            v += r;
        }
        if self.relu {
            // The op's one definition (`v < 0 ? 0 : v`: NaN and -0 stay; exact in f64).
            v = UnaryOp::Relu.apply(f64::from(v)) as f32;
        }
        v
    }
}

/// A recognized epilogue: where its bias and residual live, per image and output channel.
#[derive(Clone, Copy, Debug)]
pub struct PostOp {
    /// `(base, image stride, channel stride)` of the per-channel addend.
    bias: Option<(*const f32, isize, isize)>,
    /// `(base, image stride, channel stride)` of the residual (pixels laid out like the
    /// output's, rows `OW` apart).
    res: Option<(*const f32, isize, isize)>,
    relu: bool,
}

// SAFETY: the pointers are read-only views of buffers that outlive every run, never written
// while the convolution they belong to runs (they are its inputs).
unsafe impl Send for PostOp {}
// SAFETY: as above; only read through.
unsafe impl Sync for PostOp {}

/// Where one access of the epilogue reads, at image `n`, channel `o`, pixel `p`.
enum Src {
    /// The raw product (the output's own index).
    Raw,
    /// `base[n·sn + o·sc]`, the same for every pixel.
    Channel(*const f32, isize, isize),
    /// `base[n·sn + o·sc + p]`.
    Pixels(*const f32, isize, isize),
}

impl PostOp {
    /// The post-op form of epilogue `k` over the output `[N, O, OH, OW]`, whose input `j` is
    /// at `inputs[j]` (input 0, the raw product, is the output itself); `None` unless the
    /// program is the chain this module applies.
    pub fn recognize(k: &LoopKernel, inputs: &[*const f32]) -> Option<PostOp> {
        if k.reduction.is_some() || k.window.is_some() || k.shape.len() != 4 {
            return None;
        }
        let (o, h, w) = (k.shape[1], k.shape[2], k.shape[3]);
        let srcs: Vec<Src> = k
            .accesses
            .iter()
            .map(|a| src(a, inputs, (o, h, w)))
            .collect::<Option<_>>()?;
        let load = |step: usize| match k.program.get(step) {
            Some(&Scalar::Load(a)) => srcs.get(a),
            _ => None,
        };
        // Walk the chain from the raw load: each later step must consume the chain's value.
        let mut cur: Option<usize> = None;
        let (mut bias, mut res, mut relu) = (None, None, false);
        for (i, s) in k.program.iter().enumerate() {
            match *s {
                Scalar::Load(a) => {
                    if cur.is_none() && matches!(srcs.get(a)?, Src::Raw) {
                        cur = Some(i);
                    }
                }
                Scalar::Binary(BinaryOp::Add, x, y) if !relu => {
                    let c = cur?;
                    let other = match (x == c, y == c) {
                        (true, false) => y,
                        (false, true) => x,
                        _ => return None,
                    };
                    match *load(other)? {
                        Src::Channel(p, sn, sc) if bias.is_none() && res.is_none() => {
                            bias = Some((p, sn, sc))
                        }
                        Src::Pixels(p, sn, sc) if res.is_none() => res = Some((p, sn, sc)),
                        _ => return None,
                    }
                    cur = Some(i);
                }
                Scalar::Unary(UnaryOp::Relu, x) if Some(x) == cur && !relu => {
                    relu = true;
                    cur = Some(i);
                }
                _ => return None,
            }
        }
        (cur.is_some() && cur == k.program.len().checked_sub(1)).then_some(PostOp {
            bias,
            res,
            relu,
        })
    }

    /// The epilogue of image `n`, from output channel `o` on (block rows are channels, columns
    /// pixels).
    pub fn image(&self, n: usize, o: usize) -> Post {
        let at = |(p, sn, sc): (*const f32, isize, isize)| {
            p.wrapping_offset(n as isize * sn + o as isize * sc)
        };
        Post {
            bias: self.bias.map_or(std::ptr::null(), at),
            bias_rs: self.bias.map_or(0, |b| b.2),
            res: self.res.map_or(std::ptr::null(), at),
            res_rs: self.res.map_or(0, |r| r.2),
            relu: self.relu,
        }
    }
}

/// How access `a` of an epilogue over `[N, O, H, W]` reads, if it is one the post-op takes.
fn src(a: &Access, inputs: &[*const f32], (o, h, w): (usize, usize, usize)) -> Option<Src> {
    let [sn, sc, sh, sw] = <[isize; 4]>::try_from(a.strides.as_slice()).ok()?;
    let plane = (h * w) as isize;
    if a.input == 0 {
        // The raw product must be read at exactly the output's index.
        return (a.offset == 0 && [sn, sc, sh, sw] == [o as isize * plane, plane, w as isize, 1])
            .then_some(Src::Raw);
    }
    let base = inputs.get(a.input)?.wrapping_offset(a.offset);
    match (sh, sw) {
        (0, 0) => Some(Src::Channel(base, sn, sc)),
        (sh, 1) if sh == w as isize => Some(Src::Pixels(base, sn, sc)),
        _ => None,
    }
}

/// `dst = post(src)` for `rows` rows of `len` floats: rows `src_rs` and `dst_rs` apart, the
/// post's residual laid out like `dst` (rows `dst_rs` apart from its pointer on); one output
/// channel (the post's row 0). `src` may be `dst`.
///
/// # Safety
/// Both regions valid for the rows given (they are the same or do not overlap); the post's
/// pointers valid for the elements addressed.
pub unsafe fn copy_post(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    (rows, len): (usize, usize),
    post: Post,
) {
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX-512F is present; forwarded.
        unsafe { copy_post_avx512(src, src_rs, dst, dst_rs, (rows, len), post) };
        return;
    }
    // SAFETY: forwarded.
    unsafe { copy_post_scalar(src, src_rs, dst, dst_rs, (rows, len), post) }
}

/// [`copy_post`] one element at a time (without AVX-512F).
///
/// # Safety
/// As [`copy_post`].
unsafe fn copy_post_scalar(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    (rows, len): (usize, usize),
    post: Post,
) {
    // SAFETY: the caller's contract.
    let bias = (!post.bias.is_null()).then(|| unsafe { *post.bias });
    for y in 0..rows {
        for x in 0..len {
            // SAFETY: element (y, x) of both regions and of the residual (contract).
            unsafe {
                let res = (!post.res.is_null()).then(|| *post.res.add(y * dst_rs + x));
                *dst.add(y * dst_rs + x) = post.value(*src.add(y * src_rs + x), bias, res);
            }
        }
    }
}

/// [`copy_post`] on AVX-512.
///
/// # Safety
/// As [`copy_post`]; AVX-512F present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_post_avx512(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    (rows, len): (usize, usize),
    post: Post,
) {
    use std::arch::x86_64::*;
    for y in 0..rows {
        let mut j = 0;
        while j < len {
            let n = (len - j).min(16);
            let m = super::sgemm::lane_mask(0, n as isize);
            // SAFETY: lanes j..j+n of row y of both regions and the residual (contract).
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, src.add(y * src_rs + j));
                // The residual's rows lie as dst's (a null one stays null).
                let res = if post.res.is_null() {
                    post.res
                } else {
                    post.res.wrapping_add(y * dst_rs + j)
                };
                let at = Post { res, ..post };
                _mm512_mask_storeu_ps(dst.add(y * dst_rs + j), m, post_lanes(v, at, m));
            }
            j += n;
        }
    }
}

/// `relu?((v + bias) + res)` on the lanes `m` of one vector: `post`'s bias (one value) and
/// its residual from `post.res` on (those lanes), ReLU as `maxps(0, x)` with zero first (its
/// second operand wins for NaN and two zeros): [`Post::value`]'s operations, so the
/// same bits. For products that finish a vector at a time outside the GEMM microkernel (whose
/// own epilogue keeps its whole register tile in registers).
///
/// # Safety
/// AVX-512F present; `post.bias` (if not null) valid, `post.res` (if not null) valid for the
/// lanes in `m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn post_lanes(
    v: std::arch::x86_64::__m512,
    post: Post,
    m: std::arch::x86_64::__mmask16,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let mut v = v;
    if !post.bias.is_null() {
        // SAFETY: the bias (contract).
        v = _mm512_add_ps(v, _mm512_set1_ps(unsafe { *post.bias }));
    }
    if !post.res.is_null() {
        // SAFETY: the residual's lanes in m (contract).
        v = _mm512_add_ps(v, unsafe { _mm512_maskz_loadu_ps(m, post.res) });
    }
    if post.relu {
        // Zero first: `maxps` returns its second operand for a NaN (and -0), as `v < 0 ? 0 : v`.
        v = _mm512_max_ps(_mm512_setzero_ps(), v);
    }
    v
}

/// A 4-D epilogue over the output `shape` `[N, O, H, W]` running `program`: access 0 the raw
/// product, 1 a per-channel value, 2 a residual laid out like the output, 3 a per-pixel value
/// shared by every channel (for tests here and in [`super::contraction`]).
#[cfg(test)]
pub(crate) fn epilogue_kernel(shape: [usize; 4], program: Vec<Scalar>) -> LoopKernel {
    let [_, o, h, w] = shape;
    let dense = vec![(o * h * w) as isize, (h * w) as isize, w as isize, 1];
    let access = |input, strides| Access {
        input,
        strides,
        offset: 0,
    };
    LoopKernel {
        shape: shape.to_vec(),
        num_inputs: 4,
        accesses: vec![
            access(0, dense.clone()),
            access(1, vec![0, 1, 0, 0]),
            access(2, dense),
            access(3, vec![0, 0, w as isize, 1]),
        ],
        program,
        reduction: None,
        window: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4-D epilogue over `[2, 3, 4, 5]` ([`epilogue_kernel`]).
    fn kernel(program: Vec<Scalar>) -> LoopKernel {
        epilogue_kernel([2, 3, 4, 5], program)
    }

    fn parts(program: Vec<Scalar>) -> Option<(bool, bool, bool)> {
        let ptrs = [std::ptr::null(); 4];
        PostOp::recognize(&kernel(program), &ptrs)
            .map(|p| (p.bias.is_some(), p.res.is_some(), p.relu))
    }

    #[test]
    fn the_bias_residual_relu_chain_is_recognized_and_nothing_else() {
        use BinaryOp::{Add, Max, Mul, Sub};
        use Scalar::{Binary, Load, Unary};
        let relu = |x| Unary(UnaryOp::Relu, x);
        // The chain in its parts, loads in any order, additions in either operand order.
        let yes = [
            (vec![Load(0)], (false, false, false)),
            (vec![Load(0), relu(0)], (false, false, true)),
            (
                vec![Load(0), Load(1), Binary(Add, 0, 1)],
                (true, false, false),
            ),
            (
                vec![
                    Load(2),
                    Load(1),
                    Load(0),
                    Binary(Add, 1, 2),
                    Binary(Add, 0, 3),
                    relu(4),
                ],
                (true, true, true),
            ),
            (
                vec![Load(2), Load(0), Binary(Add, 1, 0), relu(2)],
                (false, true, true),
            ),
            // A value per pixel, the same for every channel: a residual of channel stride 0.
            (
                vec![Load(0), Load(3), Binary(Add, 0, 1)],
                (false, true, false),
            ),
        ];
        for (program, want) in yes {
            assert_eq!(parts(program.clone()), Some(want), "{program:?}");
        }
        let no = [
            // Not a chain from the raw value, or another operation.
            vec![Load(1)],
            vec![Load(0), Load(1), Binary(Mul, 0, 1)],
            vec![Load(0), Load(1), Binary(Sub, 0, 1)],
            vec![Load(0), Load(1), Binary(Max, 0, 1)],
            // The residual before the bias (the other rounding order), or twice.
            vec![
                Load(0),
                Load(2),
                Load(1),
                Binary(Add, 0, 1),
                Binary(Add, 3, 2),
            ],
            vec![Load(0), Load(2), Binary(Add, 0, 1), Binary(Add, 2, 1)],
            // ReLU then an addition; two ReLUs; a ReLU not of the chain.
            vec![Load(0), relu(0), Load(1), Binary(Add, 1, 2)],
            vec![Load(0), relu(0), relu(1)],
            vec![Load(0), Load(1), relu(1), Binary(Add, 0, 2)],
            // The chain's value not the result.
            vec![Load(0), Load(1), Binary(Add, 0, 1), Load(2)],
            // The raw value added to itself.
            vec![Load(0), Binary(Add, 0, 0)],
        ];
        for program in no {
            assert_eq!(parts(program.clone()), None, "{program:?}");
        }
        // The raw product read anywhere but at the output's own index.
        let mut k = kernel(vec![Load(0), relu(0)]);
        k.accesses[0].offset = 1;
        assert!(PostOp::recognize(&k, &[std::ptr::null(); 4]).is_none());
    }

    #[test]
    fn image_offsets_follow_the_strides() {
        let (b, r) = ([0f32; 64], [0f32; 512]);
        let mut k = kernel(vec![
            Scalar::Load(0),
            Scalar::Load(1),
            Scalar::Binary(BinaryOp::Add, 0, 1),
            Scalar::Load(2),
            Scalar::Binary(BinaryOp::Add, 2, 3),
        ]);
        // A bias per image and channel (stride 3 per image), 2 floats apart; the residual at
        // offset 7.
        k.accesses[1].strides = vec![6, 2, 0, 0];
        k.accesses[2].offset = 7;
        let op =
            PostOp::recognize(&k, &[std::ptr::null(), b.as_ptr(), r.as_ptr(), b.as_ptr()]).unwrap();
        let p = op.image(1, 2).at(1, 3);
        assert_eq!(p.bias, b.as_ptr().wrapping_add(6 + 2 * 2 + 2));
        assert_eq!(p.res, r.as_ptr().wrapping_add(7 + 60 + 2 * 20 + 20 + 3));
        assert_eq!((p.bias_rs, p.res_rs), (2, 20));
    }

    #[test]
    fn vector_and_scalar_copies_agree_bit_for_bit() {
        if !crate::runtime::sgemm::available() {
            return;
        }
        let mut seed = 0x1357_9bdfu32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32
        };
        for (rows, len) in [(1, 1), (3, 17), (2, 33), (5, 7)] {
            for parts in 0..8 {
                let (src_rs, dst_rs) = (len + 2, len + 5);
                let mut src: Vec<f32> = (0..rows * src_rs).map(|_| next()).collect();
                src[0] = f32::NAN;
                let last = src.len() - 1;
                src[last] = -0.0;
                let bias = [next()];
                let res: Vec<f32> = (0..rows * dst_rs).map(|_| next()).collect();
                let post = Post {
                    bias: if parts & 1 != 0 {
                        bias.as_ptr()
                    } else {
                        std::ptr::null()
                    },
                    bias_rs: 0,
                    res: if parts & 2 != 0 {
                        res.as_ptr()
                    } else {
                        std::ptr::null()
                    },
                    res_rs: 0,
                    relu: parts & 4 != 0,
                };
                let mut a = vec![1f32; rows * dst_rs];
                let mut s = a.clone();
                // SAFETY: rows × len inside every buffer at these strides.
                unsafe {
                    copy_post(
                        src.as_ptr(),
                        src_rs,
                        a.as_mut_ptr(),
                        dst_rs,
                        (rows, len),
                        post,
                    );
                    copy_post_scalar(
                        src.as_ptr(),
                        src_rs,
                        s.as_mut_ptr(),
                        dst_rs,
                        (rows, len),
                        post,
                    );
                }
                for (j, (x, y)) in a.iter().zip(&s).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{rows}×{len} parts {parts}: [{j}]"
                    );
                }
                if parts & 2 == 0 {
                    // A NaN is never hidden, with or without the ReLU (PyTorch's relu).
                    assert!(a[0].is_nan(), "parts {parts}: {}", a[0]);
                }
            }
        }
    }
}
