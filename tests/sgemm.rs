//! `runtime::sgemm` against a plain triple loop in f64: odd sizes, every stride pattern the
//! runtime uses (row-major, transposed lhs, transposed rhs, dst rows wider than n), with and
//! without accumulation, and k = 0.

use netc::data::rng::Rng;
use netc::runtime::sgemm;

/// xorshift32 in [-1, 1).
/// How the operands are laid out: transposed lhs / rhs, extra columns in dst's rows, and
/// whether the product is added to dst.
#[derive(Clone, Copy)]
struct Layout {
    ta: bool,
    tb: bool,
    pad: usize,
    acc: bool,
}

/// Runs one product with the given layout and checks every element of dst (including the
/// padding columns, which must be untouched).
fn check((m, n, k): (usize, usize, usize), layout: Layout, rng: &mut Rng) {
    let Layout { ta, tb, pad, acc } = layout;
    let a: Vec<f32> = (0..m * k)
        .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
        .collect();
    let ld = n + pad;
    let init: Vec<f32> = (0..m * ld)
        .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
        .collect();
    let (ars, acs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (brs, bcs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let mut c = init.clone();
    // SAFETY: a is m·k, b is k·n, c is m·ld floats, addressed by these strides.
    let ran = unsafe {
        sgemm::sgemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            ld as isize,
            a.as_ptr(),
            ars,
            acs,
            b.as_ptr(),
            brs,
            bcs,
            acc,
        )
    };
    assert_eq!(ran, sgemm::available());
    if !ran {
        return;
    }
    for i in 0..m {
        for j in 0..ld {
            let got = c[i * ld + j] as f64;
            let want = if j >= n {
                init[i * ld + j] as f64
            } else {
                let mut s = if acc { init[i * ld + j] as f64 } else { 0.0 };
                let mut mag = s.abs();
                for p in 0..k {
                    let x = a[(i as isize * ars + p as isize * acs) as usize] as f64
                        * b[(p as isize * brs + j as isize * bcs) as usize] as f64;
                    s += x;
                    mag += x.abs();
                }
                let tol = 1e-5 * (k as f64 + 1.0).sqrt().max(1.0) * mag.max(1e-30) + 1e-30;
                assert!(
                    (got - s).abs() <= tol,
                    "m={m} n={n} k={k} ta={ta} tb={tb} pad={pad} acc={acc}: \
                     dst[{i},{j}] = {got}, want {s} (tolerance {tol})"
                );
                continue;
            };
            assert_eq!(
                got, want,
                "m={m} n={n} k={k} ta={ta} tb={tb} pad={pad} acc={acc}: padding at [{i},{j}] changed"
            );
        }
    }
}

fn layouts(m: usize, n: usize, k: usize, rng: &mut Rng) {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for pad in [0, 5] {
            for acc in [false, true] {
                check((m, n, k), Layout { ta, tb, pad, acc }, rng);
            }
        }
    }
}

#[test]
fn the_machine_has_the_fast_path() {
    // This test machine has AVX-512F: make sure the tests below exercise it, not the fallback.
    if std::env::var_os("NETC_SGEMM_NO_AVX512_OK").is_none() && cfg!(target_arch = "x86_64") {
        assert!(
            sgemm::available(),
            "AVX-512F not detected: the kernel tests would not test the kernel \
             (set NETC_SGEMM_NO_AVX512_OK=1 on machines without it)"
        );
    }
}

#[test]
fn small_sizes_every_layout() {
    let mut rng = Rng::new(0x1234_5678);
    for m in 1..=70 {
        for &(n, k) in &[
            (1, 1),
            (17, 3),
            (33, 9),
            (48, 16),
            (49, 31),
            (70, 70),
            (5, 64),
        ] {
            layouts(m, n, k, &mut rng);
        }
    }
    for n in 1..=70 {
        for &(m, k) in &[(1, 2), (7, 13), (8, 25), (9, 40), (17, 69)] {
            layouts(m, n, k, &mut rng);
        }
    }
    for k in 1..=70 {
        layouts(11, 37, k, &mut rng);
    }
}

#[test]
fn random_sizes_every_layout() {
    let mut rng = Rng::new(0x9e37_79b9);
    for _ in 0..60 {
        let m = 1 + rng.below(70) as usize;
        let n = 1 + rng.below(70) as usize;
        let k = 1 + rng.below(70) as usize;
        layouts(m.min(70), n.min(70), k.min(70), &mut rng);
    }
}

#[test]
fn k_zero_writes_zeros_or_leaves_dst() {
    let mut rng = Rng::new(7);
    for (m, n) in [(1, 1), (3, 17), (20, 40)] {
        layouts(m, n, 0, &mut rng);
    }
}

#[test]
fn large_sizes_cross_every_block() {
    // Larger than the packing blocks in every dimension, with ragged edges.
    let mut rng = Rng::new(42);
    layouts(200, 333, 517, &mut rng);
    // The last three: few columns, so slices of k longer than 512 (one of 9300; two of
    // 10000; two of 2350).
    for (m, n, k) in [
        (5, 3100, 40),
        (16, 800, 150),
        (300, 49, 700),
        (64, 10, 84),
        (30, 16, 9300),
        (13, 5, 20000),
        (50, 49, 4700),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            let big = Layout {
                ta,
                tb,
                pad: 3,
                acc: true,
            };
            check((m, n, k), big, &mut rng);
            let tight = Layout {
                pad: 0,
                acc: false,
                ..big
            };
            check((m, n, k), tight, &mut rng);
        }
    }
}

/// `sgemm_post` against `sgemm` followed by the scalar epilogue: bit for bit, for every part
/// of the epilogue, strided bias and residual rows, ragged edges, several slices of `k` (the
/// epilogue only on the last), `rhs` read in place (few rows) and packed, and `k = 0`; dst's
/// padding untouched.
#[test]
fn post_epilogue_matches_product_then_epilogue_bit_for_bit() {
    let mut rng = Rng::new(0x51ed_27a3);
    let sizes = [
        (1, 1, 1),
        (7, 33, 5),
        (6, 64, 70),
        (25, 200, 64),
        (30, 130, 600),
        // Wide enough that k is cut into slices of at most 512.
        (13, 530, 1100),
        (30, 600, 700),
        (4, 19, 0),
    ];
    for (case, &(m, n, k)) in sizes.iter().enumerate() {
        for parts in 0..8 {
            let (bias, res, relu) = (parts & 1 != 0, parts & 2 != 0, parts & 4 != 0);
            for ta in [false, true] {
                let a: Vec<f32> = (0..m * k)
                    .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
                    .collect();
                let (ld, res_ld) = (n + 3, n + 7);
                let init: Vec<f32> = (0..m * ld)
                    .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
                    .collect();
                let bv: Vec<f32> = (0..2 * m)
                    .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
                    .collect();
                let mut rv: Vec<f32> = (0..m * res_ld)
                    .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
                    .collect();
                rv[(m * res_ld) / 2] = f32::NAN;
                let (ars, acs) = if ta { (1, m as isize) } else { (k as isize, 1) };
                let post = sgemm::Post {
                    bias: if bias { bv.as_ptr() } else { std::ptr::null() },
                    bias_rs: 2,
                    res: if res { rv.as_ptr() } else { std::ptr::null() },
                    res_rs: res_ld as isize,
                    relu,
                };
                let (mut raw, mut got) = (init.clone(), init.clone());
                // SAFETY: a is m·k, b is k·n, raw and got m·ld, bv 2m, rv m·res_ld floats.
                let ran = unsafe {
                    sgemm::sgemm(
                        m,
                        n,
                        k,
                        raw.as_mut_ptr(),
                        ld as isize,
                        a.as_ptr(),
                        ars,
                        acs,
                        b.as_ptr(),
                        n as isize,
                        1,
                        false,
                    ) && sgemm::sgemm_post(
                        m,
                        n,
                        k,
                        got.as_mut_ptr(),
                        ld as isize,
                        a.as_ptr(),
                        ars,
                        acs,
                        b.as_ptr(),
                        n as isize,
                        1,
                        post,
                    )
                };
                if !ran {
                    return;
                }
                for i in 0..m {
                    for j in 0..ld {
                        let want = if j < n {
                            post.value(
                                raw[i * ld + j],
                                bias.then(|| bv[2 * i]),
                                res.then(|| rv[i * res_ld + j]),
                            )
                        } else {
                            init[i * ld + j]
                        };
                        let g = got[i * ld + j];
                        assert!(
                            g.to_bits() == want.to_bits(),
                            "case {case} ({m}, {n}, {k}) parts {parts} ta {ta}: [{i},{j}] = {g}, \
                             want {want}"
                        );
                    }
                }
            }
        }
    }
}
