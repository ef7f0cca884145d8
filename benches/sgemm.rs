//! Single-threaded SGEMM throughput: `netc::runtime::sgemm` against the `gemm` crate, on the
//! shapes the runtime's convolutions and matmuls produce. `cargo bench --bench sgemm`
//! (`-- <filter>` keeps the shapes whose label contains the filter).

use std::hint::black_box;
use std::time::{Duration, Instant};

/// One shape: a label, `m`, `n`, `k`, whether lhs / rhs are transposed, accumulate.
struct Shape {
    label: &'static str,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    acc: bool,
}

const fn s(label: &'static str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Shape {
    Shape {
        label,
        m,
        n,
        k,
        ta,
        tb,
        acc: tb,
    }
}

const SHAPES: &[Shape] = &[
    // Forward convolution through im2col: out channels × band of pixels, K = C·9.
    s("fwd 64x576 . 576x336", 64, 336, 576, false, false),
    s("fwd 128x1152 . 1152x364", 128, 364, 1152, false, false),
    s("fwd 256x2304 . 2304x392", 256, 392, 2304, false, false),
    s("fwd 512x4608 . 4608x392", 512, 392, 4608, false, false),
    s("fwd 512x4608 . 4608x49", 512, 49, 4608, false, false),
    s("fwd 256x2304 . 2304x196", 256, 196, 2304, false, false),
    s("fwd 1x1 128x64 . 64x784", 128, 784, 64, false, false),
    // Backward-weight: dy · im2col(x)ᵀ, long k, accumulating.
    s("bww 64x336 . (576x336)T", 64, 576, 336, false, true),
    s("bww 64x3136 . (576x3136)T", 64, 576, 3136, false, true),
    s("bww 128x392 . (1152x392)T", 128, 1152, 392, false, true),
    s("bww 256x392 . (2304x392)T", 256, 2304, 392, false, true),
    s("bww 512x392 . (4608x392)T", 512, 4608, 392, false, true),
    // Backward-data: Wᵀ · dy.
    s("bwd (64x576)T . 64x336", 576, 336, 64, true, false),
    s("bwd (128x1152)T . 128x364", 1152, 364, 128, true, false),
    s("bwd (256x2304)T . 256x392", 2304, 392, 256, true, false),
    s("bwd (512x4608)T . 512x392", 4608, 392, 512, true, false),
    // LeNet convolutions.
    s("lenet 6x25 . 25x784", 6, 784, 25, false, false),
    s("lenet 6x25 . 25x12544", 6, 12544, 25, false, false),
    s("lenet 16x150 . 150x400", 16, 400, 150, false, false),
    s("lenet bww 16x400 . (150x400)T", 16, 150, 400, false, true),
    s("lenet bwd (16x150)T . 16x400", 150, 400, 16, true, false),
    // Dense layers: x · Wᵀ, and the gradients.
    s("dense 64x400 . (120x400)T", 64, 120, 400, false, true),
    s("dense 64x120 . (84x120)T", 64, 84, 120, false, true),
    s("dense 64x84 . (10x84)T", 64, 10, 84, false, true),
    s("dense dx 64x120 . 120x400", 64, 400, 120, false, false),
    s("dense dW (64x120)T . 64x400", 120, 400, 64, true, false),
    s("square 512^3", 512, 512, 512, false, false),
];

struct Bufs {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

type Strides = (isize, isize, isize, isize);

fn strides(sh: &Shape) -> Strides {
    let (ars, acs) = if sh.ta {
        (1, sh.m as isize)
    } else {
        (sh.k as isize, 1)
    };
    let (brs, bcs) = if sh.tb {
        (1, sh.k as isize)
    } else {
        (sh.n as isize, 1)
    };
    (ars, acs, brs, bcs)
}

fn ours(sh: &Shape, b: &mut Bufs, st: Strides) {
    // SAFETY: the buffers hold m·k, k·n and m·n floats, addressed by these strides.
    let ok = unsafe {
        netc::runtime::sgemm::sgemm(
            sh.m,
            sh.n,
            sh.k,
            b.c.as_mut_ptr(),
            sh.n as isize,
            b.a.as_ptr(),
            st.0,
            st.1,
            b.b.as_ptr(),
            st.2,
            st.3,
            sh.acc,
        )
    };
    assert!(ok, "no AVX-512F on this machine");
}

fn theirs(sh: &Shape, b: &mut Bufs, st: Strides) {
    // SAFETY: as `ours`; gemm takes column strides first.
    unsafe {
        gemm::gemm(
            sh.m,
            sh.n,
            sh.k,
            b.c.as_mut_ptr(),
            1,
            sh.n as isize,
            sh.acc,
            b.a.as_ptr(),
            st.1,
            st.0,
            b.b.as_ptr(),
            st.3,
            st.2,
            if sh.acc { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Best time per call of each function over interleaved rounds of about 30 ms each, so a
/// busy neighbour on the machine slows both alike.
fn time2(f: &mut dyn FnMut(), g: &mut dyn FnMut()) -> (Duration, Duration) {
    let reps = |h: &mut dyn FnMut()| {
        h();
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(10) {
            h();
            n += 1;
        }
        (n * 3).max(1)
    };
    let (rf, rg) = (reps(f), reps(g));
    let round = |h: &mut dyn FnMut(), r: u32| {
        let t = Instant::now();
        for _ in 0..r {
            h();
        }
        t.elapsed() / r
    };
    let (mut bf, mut bg) = (Duration::MAX, Duration::MAX);
    for _ in 0..10 {
        bf = bf.min(round(f, rf));
        bg = bg.min(round(g, rg));
    }
    (bf, bg)
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.replace('_', " "))
        .collect();
    println!(
        "{:<32} {:>10} {:>10} {:>7}",
        "shape (m×k · k×n)", "ours GF/s", "gemm GF/s", "ratio"
    );
    let mut x = 1u32;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x as f32 / u32::MAX as f32) - 0.5
    };
    for sh in SHAPES {
        if !filter.is_empty() && !filter.iter().any(|f| sh.label.contains(f.as_str())) {
            continue;
        }
        let b = Bufs {
            a: (0..sh.m * sh.k).map(|_| rnd()).collect(),
            b: (0..sh.k * sh.n).map(|_| rnd()).collect(),
            c: vec![0.0; sh.m * sh.n],
        };
        let st = strides(sh);
        let flops = 2.0 * (sh.m * sh.n * sh.k) as f64;
        let b = std::cell::RefCell::new(b);
        let (t_ours, t_theirs) = time2(
            &mut || {
                ours(sh, &mut b.borrow_mut(), st);
                black_box(&b);
            },
            &mut || {
                theirs(sh, &mut b.borrow_mut(), st);
                black_box(&b);
            },
        );
        let g_ours = flops / t_ours.as_secs_f64() / 1e9;
        let g_theirs = flops / t_theirs.as_secs_f64() / 1e9;
        println!(
            "{:<32} {:>10.1} {:>10.1} {:>7.2}",
            sh.label,
            g_ours,
            g_theirs,
            g_ours / g_theirs
        );
    }
}
