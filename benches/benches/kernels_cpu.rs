//! The CPU kernels, each next to a plain memcpy of the same bytes measured in the same run,
//! and (with `--features peers`) next to candle's CPU op on the same inputs.
//!
//! `cargo bench -p layerzero-benches --bench kernels_cpu --features peers`
//!
//! Bytes are logical reads of every input plus writes of every output; the memcpy row
//! copies half that many bytes (so it, too, reads and writes that many). FLOPs count
//! multiply-adds as two; causal attention counts only the visible (query, key) pairs, for
//! every contender alike. After criterion's own report, a table gives each figure with its
//! ratio to memcpy, to the peer and to the PERF.md target.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use half::bf16;
use layerzero::types::{
    AttentionArgs, KernelResult, Layout, MatmulArgs, NormArgs, Residual, RopeArgs, RopeStyle, SwigluArgs, SwigluInput,
    TensorView, TensorViewMut,
};
use layerzero_kernels as kernels;
use rayon::prelude::*;

/// What a row's work is measured in.
#[derive(Clone, Copy)]
enum Work {
    Bytes(f64),
    Flops(f64),
}

impl Work {
    fn rate(self, seconds: f64) -> f64 {
        match self {
            Work::Bytes(b) => b / seconds / 1e9,
            Work::Flops(f) => f / seconds / 1e9,
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Work::Bytes(_) => "GB/s",
            Work::Flops(_) => "GFLOP/s",
        }
    }
}

/// Per (row, contender): the work and every measured time per iteration, in seconds.
type Samples = BTreeMap<(String, String), (Work, Vec<f64>)>;
static SAMPLES: Mutex<Samples> = Mutex::new(BTreeMap::new());
/// Rows in the order they ran, with their PERF.md target.
static ROWS: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());

fn measure(group: &mut BenchmarkGroup<'_, WallTime>, row: &str, contender: &str, work: Work, mut f: impl FnMut()) {
    group.bench_function(contender, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let elapsed = start.elapsed();
            let per_iter = elapsed.as_secs_f64() / iters as f64;
            let mut samples = SAMPLES.lock().unwrap();
            samples.entry((row.to_owned(), contender.to_owned())).or_insert((work, Vec::new())).1.push(per_iter);
            elapsed
        })
    });
}

fn group<'a>(c: &'a mut Criterion, row: &str, target: &'static str, heavy: bool) -> BenchmarkGroup<'a, WallTime> {
    ROWS.lock().unwrap().push((row.to_owned(), target));
    let mut g = c.benchmark_group(row);
    g.sample_size(10).warm_up_time(Duration::from_millis(if heavy { 500 } else { 300 }));
    g.measurement_time(Duration::from_secs(if heavy { 4 } else { 2 }));
    g
}

/// The memcpy baseline: copies `bytes / 2` bytes on every thread, so it reads and writes
/// `bytes` in all.
fn memcpy(g: &mut BenchmarkGroup<'_, WallTime>, row: &str, bytes: f64) {
    let n = (bytes / 2.0 / 4.0) as usize;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    measure(g, row, "memcpy", Work::Bytes(bytes), || {
        dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        black_box(&mut dst);
    });
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic spread in [-1, 1).
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 8_388_608.0 - 1.0)
        .collect()
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn ok(result: KernelResult) {
    result.unwrap();
}

#[cfg(feature = "peers")]
mod peer {
    pub use candle_core::{DType, Device, Tensor};

    pub fn tensor(values: &[f32], dims: &[usize], dtype: DType) -> Tensor {
        Tensor::from_slice(values, dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    pub fn dtype(bf16: bool) -> DType {
        if bf16 { DType::BF16 } else { DType::F32 }
    }
}

fn norms(c: &mut Criterion) {
    let (rows, hidden) = (4096, 4096);
    let x = values(rows * hidden, 1);
    let w = values(hidden, 2);
    let b = values(hidden, 3);
    for layer in [false, true] {
        for bf in [false, true] {
            let name = if layer { "layer_norm" } else { "rms_norm" };
            let row = format!("{name} {rows}x{hidden} {}", if bf { "bf16" } else { "f32" });
            let size = if bf { 2.0 } else { 4.0 };
            let bytes = size * (2 * rows * hidden + hidden * if layer { 2 } else { 1 }) as f64;
            let mut g = group(c, &row, ">= 25 GB/s", false);
            let kernel = if layer { kernels::layer_norm } else { kernels::rms_norm };
            if bf {
                let (xb, wb, bb) = (to_bf16(&x), to_bf16(&w), to_bf16(&b));
                let mut out = vec![bf16::ZERO; rows * hidden];
                measure(&mut g, &row, "layerzero", Work::Bytes(bytes), || {
                    ok(kernel(&mut NormArgs {
                        input: TensorView::from_slice(&xb, &[rows, hidden]).unwrap(),
                        weight: TensorView::from_slice(&wb, &[hidden]).unwrap(),
                        bias: layer.then(|| TensorView::from_slice(&bb, &[hidden]).unwrap()),
                        output: TensorViewMut::from_slice(&mut out, &[rows, hidden]).unwrap(),
                        eps: 1e-5,
                        residual: None,
                    }))
                });
            } else {
                let mut out = vec![0f32; rows * hidden];
                measure(&mut g, &row, "layerzero", Work::Bytes(bytes), || {
                    ok(kernel(&mut NormArgs {
                        input: TensorView::from_slice(&x, &[rows, hidden]).unwrap(),
                        weight: TensorView::from_slice(&w, &[hidden]).unwrap(),
                        bias: layer.then(|| TensorView::from_slice(&b, &[hidden]).unwrap()),
                        output: TensorViewMut::from_slice(&mut out, &[rows, hidden]).unwrap(),
                        eps: 1e-5,
                        residual: None,
                    }))
                });
            }
            memcpy(&mut g, &row, bytes);
            #[cfg(feature = "peers")]
            {
                let dt = peer::dtype(bf);
                let (xc, wc, bc) = (
                    peer::tensor(&x, &[rows, hidden], dt),
                    peer::tensor(&w, &[hidden], dt),
                    peer::tensor(&b, &[hidden], dt),
                );
                measure(&mut g, &row, "candle", Work::Bytes(bytes), || {
                    let out = if layer {
                        candle_nn::ops::layer_norm(&xc, &wc, &bc, 1e-5)
                    } else {
                        candle_nn::ops::rms_norm(&xc, &wc, 1e-5)
                    };
                    black_box(out.unwrap());
                });
            }
            g.finish();
        }
    }
}

/// The residual add and rms_norm of a decoder layer, bf16: fused in one pass
/// (`cpu.rms_norm` with a residual) next to the two-pass `cpu.rms_norm.add_then_norm`,
/// the choice a rule can make. Bytes: x and the residual read, the sum and the output
/// written (the two-pass kernel also reads the sum back, which is what fusing saves).
fn residual_norms(c: &mut Criterion) {
    let (rows, hidden) = (4096, 4096);
    let (x, r, w) =
        (to_bf16(&values(rows * hidden, 1)), to_bf16(&values(rows * hidden, 4)), to_bf16(&values(hidden, 2)));
    let (mut sum, mut out) = (vec![bf16::ZERO; rows * hidden], vec![bf16::ZERO; rows * hidden]);
    let row = format!("add + rms_norm {rows}x{hidden} bf16");
    let bytes = 2.0 * (4 * rows * hidden + hidden) as f64;
    let mut g = group(c, &row, ">= 25 GB/s", false);
    for (contender, two_pass) in [("layerzero fused", false), ("layerzero add_then_norm", true)] {
        let kernel = if two_pass { kernels::rms_norm_add_then_norm } else { kernels::rms_norm };
        measure(&mut g, &row, contender, Work::Bytes(bytes), || {
            ok(kernel(&mut NormArgs {
                input: TensorView::from_slice(&x, &[rows, hidden]).unwrap(),
                weight: TensorView::from_slice(&w, &[hidden]).unwrap(),
                bias: None,
                output: TensorViewMut::from_slice(&mut out, &[rows, hidden]).unwrap(),
                eps: 1e-5,
                residual: Some(Residual {
                    input: TensorView::from_slice(&r, &[rows, hidden]).unwrap(),
                    output: TensorViewMut::from_slice(&mut sum, &[rows, hidden]).unwrap(),
                }),
            }))
        });
    }
    memcpy(&mut g, &row, bytes);
    g.finish();
}

fn rope(c: &mut Criterion) {
    let (batch, heads, seq, dim) = (1, 32, 2048, 128);
    let n = batch * heads * seq * dim;
    let x = values(n, 4);
    let angles: Vec<f32> = (0..seq * dim / 2).map(|i| (i / (dim / 2)) as f32 * 0.01).collect();
    let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
    let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
    for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
        for bf in [false, true] {
            let row = format!("rope {style} 1x32x2048x128 {}", if bf { "bf16" } else { "f32" });
            let size = if bf { 2.0 } else { 4.0 };
            // x read and written; the f32 tables read once.
            let bytes = 2.0 * size * n as f64 + 2.0 * 4.0 * cos.len() as f64;
            let mut g = group(c, &row, ">= 25 GB/s", false);
            let cos_view = TensorView::from_slice(&cos, &[seq, dim / 2]).unwrap();
            let sin_view = TensorView::from_slice(&sin, &[seq, dim / 2]).unwrap();
            let run = |x: TensorViewMut<'_>| {
                ok(kernels::rope(&mut RopeArgs {
                    x,
                    cos: cos_view,
                    sin: sin_view,
                    position_offset: 0,
                    style,
                    layout: Layout::Bhsd,
                }))
            };
            if bf {
                let mut xb = to_bf16(&x);
                measure(&mut g, &row, "layerzero", Work::Bytes(bytes), || {
                    run(TensorViewMut::from_slice(&mut xb, &[batch, heads, seq, dim]).unwrap())
                });
            } else {
                let mut xf = x.clone();
                measure(&mut g, &row, "layerzero", Work::Bytes(bytes), || {
                    run(TensorViewMut::from_slice(&mut xf, &[batch, heads, seq, dim]).unwrap())
                });
            }
            memcpy(&mut g, &row, bytes);
            #[cfg(feature = "peers")]
            {
                let dt = peer::dtype(bf);
                let xc = peer::tensor(&x, &[batch, heads, seq, dim], dt);
                let (cc, sc) = (peer::tensor(&cos, &[seq, dim / 2], dt), peer::tensor(&sin, &[seq, dim / 2], dt));
                measure(&mut g, &row, "candle", Work::Bytes(bytes), || {
                    let out = match style {
                        RopeStyle::Neox => candle_nn::rotary_emb::rope(&xc, &cc, &sc),
                        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&xc, &cc, &sc),
                    };
                    black_box(out.unwrap());
                });
            }
            g.finish();
        }
    }
}

fn swiglu(c: &mut Criterion) {
    let (rows, width) = (2048, 14336);
    let n = rows * width;
    let gate = values(n, 5);
    let up = values(n, 6);
    for bf in [false, true] {
        let row = format!("swiglu {rows}x{width} {}", if bf { "bf16" } else { "f32" });
        let size = if bf { 2.0 } else { 4.0 };
        let bytes = 3.0 * size * n as f64;
        let mut g = group(c, &row, ">= 25 GB/s", false);
        if bf {
            let (gb, ub) = (to_bf16(&gate), to_bf16(&up));
            let mut out = vec![bf16::ZERO; n];
            measure(&mut g, &row, "layerzero", Work::Bytes(bytes), || {
                ok(kernels::swiglu(&mut SwigluArgs {
                    input: SwigluInput::Separate {
                        gate: TensorView::from_slice(&gb, &[rows, width]).unwrap(),
                        up: TensorView::from_slice(&ub, &[rows, width]).unwrap(),
                    },
                    output: TensorViewMut::from_slice(&mut out, &[rows, width]).unwrap(),
                }))
            });
        } else {
            let mut out = vec![0f32; n];
            measure(&mut g, &row, "layerzero", Work::Bytes(bytes), || {
                ok(kernels::swiglu(&mut SwigluArgs {
                    input: SwigluInput::Separate {
                        gate: TensorView::from_slice(&gate, &[rows, width]).unwrap(),
                        up: TensorView::from_slice(&up, &[rows, width]).unwrap(),
                    },
                    output: TensorViewMut::from_slice(&mut out, &[rows, width]).unwrap(),
                }))
            });
        }
        memcpy(&mut g, &row, bytes);
        #[cfg(feature = "peers")]
        {
            let dt = peer::dtype(bf);
            let (gc, uc) = (peer::tensor(&gate, &[rows, width], dt), peer::tensor(&up, &[rows, width], dt));
            measure(&mut g, &row, "candle", Work::Bytes(bytes), || {
                black_box((candle_nn::ops::silu(&gc).unwrap() * &uc).unwrap());
            });
        }
        g.finish();
    }
}

/// `dst = a · b` through the `gemm` crate directly, all f32 row-major: the baseline the
/// matmul kernel is held to.
fn gemm_direct(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n);
    let threads = rayon::current_num_threads();
    // SAFETY: the three slices hold exactly m·n, m·k and k·n elements (asserted above), the
    // strides describe dense row-major matrices of those shapes, and `dst` is borrowed
    // mutably for the call, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

fn matmul(c: &mut Criterion) {
    let (m, k, n) = (2048, 4096, 4096);
    let a = values(m * k, 7);
    let b = values(k * n, 8);
    let flops = 2.0 * (m * k * n) as f64;
    for bf in [false, true] {
        let row = format!("matmul {m}x{k}x{n} {}", if bf { "bf16" } else { "f32" });
        let mut g = group(c, &row, ">= 0.95x gemm", true);
        if bf {
            let (ab, bb) = (to_bf16(&a), to_bf16(&b));
            let mut out = vec![bf16::ZERO; m * n];
            measure(&mut g, &row, "layerzero", Work::Flops(flops), || {
                ok(kernels::matmul(&mut MatmulArgs {
                    a: TensorView::from_slice(&ab, &[m, k]).unwrap(),
                    b: TensorView::from_slice(&bb, &[k, n]).unwrap(),
                    output: TensorViewMut::from_slice(&mut out, &[m, n]).unwrap(),
                }))
            });
        } else {
            let mut out = vec![0f32; m * n];
            measure(&mut g, &row, "layerzero", Work::Flops(flops), || {
                ok(kernels::matmul(&mut MatmulArgs {
                    a: TensorView::from_slice(&a, &[m, k]).unwrap(),
                    b: TensorView::from_slice(&b, &[k, n]).unwrap(),
                    output: TensorViewMut::from_slice(&mut out, &[m, n]).unwrap(),
                }))
            });
            measure(&mut g, &row, "gemm", Work::Flops(flops), || gemm_direct(&mut out, &a, &b, m, k, n));
        }
        #[cfg(feature = "peers")]
        {
            let dt = peer::dtype(bf);
            let (ac, bc) = (peer::tensor(&a, &[m, k], dt), peer::tensor(&b, &[k, n], dt));
            measure(&mut g, &row, "candle", Work::Flops(flops), || {
                black_box(ac.matmul(&bc).unwrap());
            });
        }
        g.finish();
    }
}

type AttentionKernel = fn(&mut AttentionArgs<'_>) -> KernelResult;

/// One attention problem in BHSD, run by each of `contenders`.
struct Attention {
    heads: usize,
    kv_heads: usize,
    seq_q: usize,
    seq_k: usize,
    dim: usize,
    causal: bool,
}

impl Attention {
    fn visible_pairs(&self) -> f64 {
        (0..self.seq_q)
            .map(|i| if self.causal { (self.seq_k - self.seq_q + i + 1) as f64 } else { self.seq_k as f64 })
            .sum()
    }

    fn run(
        &self,
        c: &mut Criterion,
        row: &str,
        target: &'static str,
        work: Work,
        contenders: &[(&str, AttentionKernel)],
        bf: bool,
    ) {
        let (h, hk, sq, sk, d) = (self.heads, self.kv_heads, self.seq_q, self.seq_k, self.dim);
        let q = values(h * sq * d, 9);
        let k = values(hk * sk * d, 10);
        let v = values(hk * sk * d, 11);
        let mut g = group(c, row, target, true);
        let causal = self.causal;
        for &(name, kernel) in contenders {
            if bf {
                let (qb, kb, vb) = (to_bf16(&q), to_bf16(&k), to_bf16(&v));
                let mut out = vec![bf16::ZERO; h * sq * d];
                measure(&mut g, row, name, work, || {
                    ok(kernel(&mut AttentionArgs {
                        query: TensorView::from_slice(&qb, &[1, h, sq, d]).unwrap(),
                        key: TensorView::from_slice(&kb, &[1, hk, sk, d]).unwrap(),
                        value: TensorView::from_slice(&vb, &[1, hk, sk, d]).unwrap(),
                        output: TensorViewMut::from_slice(&mut out, &[1, h, sq, d]).unwrap(),
                        layout: Layout::Bhsd,
                        is_causal: causal,
                        scale: None,
                        window_size: None,
                    }))
                });
            } else {
                let mut out = vec![0f32; h * sq * d];
                measure(&mut g, row, name, work, || {
                    ok(kernel(&mut AttentionArgs {
                        query: TensorView::from_slice(&q, &[1, h, sq, d]).unwrap(),
                        key: TensorView::from_slice(&k, &[1, hk, sk, d]).unwrap(),
                        value: TensorView::from_slice(&v, &[1, hk, sk, d]).unwrap(),
                        output: TensorViewMut::from_slice(&mut out, &[1, h, sq, d]).unwrap(),
                        layout: Layout::Bhsd,
                        is_causal: causal,
                        scale: None,
                        window_size: None,
                    }))
                });
            }
        }
        if let Work::Bytes(bytes) = work {
            memcpy(&mut g, row, bytes);
        }
        #[cfg(feature = "peers")]
        {
            let dt = peer::dtype(bf);
            let group = h / hk;
            // Candle's plain path with GQA grouping: [1, kv_heads, group·seq_q, d] queries.
            let qc = peer::tensor(&q, &[1, hk, group * sq, d], dt);
            let kc = peer::tensor(&k, &[1, hk, sk, d], dt);
            let vc = peer::tensor(&v, &[1, hk, sk, d], dt);
            let mask: Vec<f32> = (0..group * sq * sk)
                .map(|idx| {
                    let (i, j) = ((idx / sk) % sq, idx % sk);
                    if !causal || j <= sk - sq + i { 0.0 } else { f32::NEG_INFINITY }
                })
                .collect();
            let mask = peer::tensor(&mask, &[1, 1, group * sq, sk], dt);
            let scale = 1.0 / (d as f64).sqrt();
            measure(&mut g, row, "candle", work, || {
                let kt = kc.t().unwrap();
                let scores = (qc.matmul(&kt).unwrap() * scale).unwrap();
                let scores = if causal { scores.broadcast_add(&mask).unwrap() } else { scores };
                let p = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                black_box(p.matmul(&vc).unwrap());
            });
        }
        g.finish();
    }
}

fn attention(c: &mut Criterion) {
    let prefill = Attention { heads: 32, kv_heads: 32, seq_q: 512, seq_k: 512, dim: 128, causal: true };
    let flops = Work::Flops(4.0 * 128.0 * 32.0 * prefill.visible_pairs());
    let contenders: [(&str, AttentionKernel); 2] =
        [("layerzero tiled", kernels::attention_tiled), ("layerzero naive", kernels::attention_naive)];
    for bf in [false, true] {
        let row = format!("attention causal prefill h32 s512 d128 {}", if bf { "bf16" } else { "f32" });
        prefill.run(c, &row, ">= 2x candle plain", flops, &contenders, bf);
    }
    let decode = Attention { heads: 32, kv_heads: 8, seq_q: 1, seq_k: 4096, dim: 128, causal: true };
    let contenders: [(&str, AttentionKernel); 2] =
        [("layerzero split_kv", kernels::attention_split_kv), ("layerzero tiled", kernels::attention_tiled)];
    for bf in [false, true] {
        let size = if bf { 2.0 } else { 4.0 };
        let kv_bytes = 2.0 * size * (8 * 4096 * 128) as f64;
        let row = format!("attention decode hq32 hkv8 kv4096 d128 {}", if bf { "bf16" } else { "f32" });
        decode.run(c, &row, ">= 20 GB/s of KV", Work::Bytes(kv_bytes), &contenders, bf);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report() {
    let mut samples = SAMPLES.lock().unwrap();
    let rows = ROWS.lock().unwrap();
    println!("\n| row | contender | figure | spread (p10..p90) | vs memcpy | vs candle | vs gemm | target |");
    println!("|---|---|---|---|---|---|---|---|");
    for (row, target) in rows.iter() {
        let rate = |samples: &mut Samples, who: &str| {
            samples.get_mut(&(row.clone(), who.to_owned())).map(|(work, times)| {
                let t = median(times);
                let (lo, hi) = (times[times.len() / 10], times[(times.len() * 9) / 10]);
                (work.rate(t), work.rate(hi), work.rate(lo), work.unit())
            })
        };
        let base = |samples: &mut Samples, who: &str| rate(samples, who).map(|r| r.0);
        let (memcpy, candle, gemm) =
            (base(&mut samples, "memcpy"), base(&mut samples, "candle"), base(&mut samples, "gemm"));
        let contenders: Vec<String> = samples.keys().filter(|(r, _)| r == row).map(|(_, who)| who.clone()).collect();
        for who in contenders.iter().filter(|w| w.starts_with("layerzero")) {
            let Some((figure, lo, hi, unit)) = rate(&mut samples, who) else { continue };
            let ratio = |b: Option<f64>| b.map_or("-".to_owned(), |b| format!("{:.2}x", figure / b));
            let memcpy_ratio = if unit == "GB/s" { ratio(memcpy) } else { "-".to_owned() };
            println!(
                "| {row} | {who} | {figure:.1} {unit} | {lo:.1}..{hi:.1} | {memcpy_ratio} | {} | {} | {target} |",
                ratio(candle),
                ratio(gemm)
            );
        }
        for (who, value) in [("memcpy", memcpy), ("candle", candle), ("gemm", gemm)] {
            if let (Some(v), Some((_, lo, hi, unit))) = (value, rate(&mut samples, who)) {
                println!("| {row} | {who} | {v:.1} {unit} | {lo:.1}..{hi:.1} | | | | |");
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    norms(&mut c);
    residual_norms(&mut c);
    rope(&mut c);
    swiglu(&mut c);
    matmul(&mut c);
    attention(&mut c);
    c.final_summary();
    report();
}
