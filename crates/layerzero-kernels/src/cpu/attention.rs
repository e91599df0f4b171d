//! Scaled dot-product attention: three kernels over one set of checks and helpers.
//!
//! - [`attention_naive`]: per (batch, head), the whole `seq_q × seq_k` score matrix,
//!   a plain softmax, then `P·V`. Memory grows with `seq_q · seq_k`.
//! - [`attention_tiled`]: per (batch, head, block of 64 queries), keys in tiles of 128 with
//!   an online softmax (running max and sum), skipping tiles the mask hides. Memory per
//!   thread is a few tiles, whatever the sequence lengths.
//! - [`attention_split_kv`]: for few queries against a long KV cache (decode): each task
//!   takes one KV head with all the query heads that share it (GQA packing: K and V are
//!   read once per group) and one slice of 512 keys; the slices' partial softmaxes are
//!   merged at the end.
//!
//! All three compute in f32 with the `gemm` crate for the two products, and are
//! deterministic (the work split depends on the shapes only, never on the thread count).

use std::cell::RefCell;

use layerzero_types::{AttentionArgs, DType, KernelError, KernelResult, Layout, TensorView};
use rayon::prelude::*;

use super::check::{Meta, contiguous, invalid, same_host_dtype};
use super::float::{CpuFloat, with_float_type};
use super::gemm::{MatMut, MatRef, matmul};
use super::{math, simd};

/// Queries per task in the tiled kernel.
const TILE_Q: usize = 64;
/// Keys per step of the online softmax.
const TILE_K: usize = 128;
/// Up to this many query rows, scores and outputs are dot products rather than gemm.
const DIRECT_ROWS: usize = 8;
/// Keys per task in the split-KV kernel.
const SPLIT_K: usize = 512;
/// The most query rows per sequence the split-KV kernel takes (its spec says so too).
pub(crate) const SPLIT_KV_MAX_SEQ_Q: usize = 64;

/// Attention that materialises the scores: for each (batch, head), `S = q·kᵀ·scale`
/// (`seq_q × seq_k` floats), a masked softmax, then `S·v`. Any mask, GQA/MQA, BSHD or
/// BHSD, float32/float16/bfloat16. Simple and fast for short sequences; memory grows
/// with `seq_q · seq_k`.
pub fn attention_naive(args: &mut AttentionArgs<'_>) -> KernelResult {
    let geometry = Geometry::check(args, "cpu.attention.naive")?;
    let dtype = args.query.dtype();
    with_float_type!(dtype, "cpu.attention.naive", |T| naive::<T>(args, &geometry))
}

/// Tiled attention with an online softmax: memory per thread does not grow with the
/// sequence lengths, and key tiles hidden by the causal or window mask are skipped.
/// Any mask, GQA/MQA, BSHD or BHSD, float32/float16/bfloat16.
pub fn attention_tiled(args: &mut AttentionArgs<'_>) -> KernelResult {
    let geometry = Geometry::check(args, "cpu.attention.tiled")?;
    let dtype = args.query.dtype();
    with_float_type!(dtype, "cpu.attention.tiled", |T| tiled::<T>(args, &geometry))
}

/// Split-KV attention for decode: up to 64 query rows per sequence against any number of
/// keys; parallel over KV heads and slices of the KV cache, each KV slice read once for
/// all the query heads that share it. Any mask, GQA/MQA, BSHD or BHSD.
pub fn attention_split_kv(args: &mut AttentionArgs<'_>) -> KernelResult {
    let kernel = "cpu.attention.split_kv";
    let geometry = Geometry::check(args, kernel)?;
    if geometry.seq_q > SPLIT_KV_MAX_SEQ_Q {
        return Err(KernelError::Unsupported(format!(
            "{kernel}: takes at most {SPLIT_KV_MAX_SEQ_Q} query rows per sequence, got seq_len_q {}",
            geometry.seq_q
        )));
    }
    let dtype = args.query.dtype();
    with_float_type!(dtype, kernel, |T| split_kv::<T>(args, &geometry))
}

/// Element strides of the four axes, whatever the layout.
#[derive(Clone, Copy, Debug)]
struct Axes {
    batch: usize,
    seq: usize,
    head: usize,
    dim: usize,
}

/// One attention call's sizes and flags, checked.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    head_dim_v: usize,
    scale: f32,
    causal: bool,
    window: Option<usize>,
    layout: Layout,
}

/// `[batch, seq, heads, dim]` and their strides, read in `layout`.
fn bshd(t: &Meta<'_>, strides: &[usize], layout: Layout, kernel: &str) -> Result<([usize; 4], Axes), KernelError> {
    let (&[b, x, y, d], &[sb, sx, sy, sd]) = (t.dims, strides) else {
        return Err(invalid(format!(
            "{kernel}: {} must be 4-D [batch, {}, head_dim] ({layout}), it has shape {:?}",
            t.name,
            match layout {
                Layout::Bshd => "seq, heads",
                Layout::Bhsd => "heads, seq",
            },
            t.dims
        )));
    };
    Ok(match layout {
        Layout::Bshd => ([b, x, y, d], Axes { batch: sb, seq: sx, head: sy, dim: sd }),
        Layout::Bhsd => ([b, y, x, d], Axes { batch: sb, seq: sy, head: sx, dim: sd }),
    })
}

impl Geometry {
    fn check(args: &AttentionArgs<'_>, kernel: &str) -> Result<Geometry, KernelError> {
        let (q, k, v) = (Meta::of("query", &args.query), Meta::of("key", &args.key), Meta::of("value", &args.value));
        let out = Meta::of_mut("output", &args.output);
        same_host_dtype(kernel, &[&q, &k, &v, &out])?;
        let layout = args.layout;
        let (qd, _) = bshd(&q, args.query.strides(), layout, kernel)?;
        let (kd, _) = bshd(&k, args.key.strides(), layout, kernel)?;
        let (vd, _) = bshd(&v, args.value.strides(), layout, kernel)?;
        let (od, _) = bshd(&out, args.output.strides(), layout, kernel)?;
        let [batch, seq_q, heads, head_dim] = qd;
        let [_, seq_k, kv_heads, _] = kd;
        let head_dim_v = vd[3];
        let name = |d: [usize; 4]| format!("[batch {}, seq {}, heads {}, dim {}]", d[0], d[1], d[2], d[3]);
        if kd[0] != batch || kd[3] != head_dim {
            return Err(invalid(format!(
                "{kernel}: key must have the query's batch {batch} and head_dim {head_dim}, it is {}",
                name(kd)
            )));
        }
        if vd[0] != batch || vd[1] != seq_k || vd[2] != kv_heads {
            return Err(invalid(format!(
                "{kernel}: value must have the key's batch {batch}, seq {seq_k} and heads {kv_heads}, it is {}",
                name(vd)
            )));
        }
        if od != [batch, seq_q, heads, head_dim_v] {
            return Err(invalid(format!(
                "{kernel}: output must be {} (the query's, with value's head_dim), it is {}",
                name([batch, seq_q, heads, head_dim_v]),
                name(od)
            )));
        }
        if heads == 0 || kv_heads == 0 || head_dim == 0 || head_dim_v == 0 {
            return Err(invalid(format!(
                "{kernel}: heads, kv_heads and head dims must be at least 1, got heads {heads}, kv_heads {kv_heads}, head_dim {head_dim}, value head_dim {head_dim_v}"
            )));
        }
        if heads % kv_heads != 0 {
            return Err(invalid(format!(
                "{kernel}: kv_heads must divide heads (GQA), got {heads} query heads over {kv_heads} KV heads"
            )));
        }
        let scale = args.effective_scale();
        if !scale.is_finite() {
            return Err(invalid(format!("{kernel}: scale must be finite, it is {scale}")));
        }
        if args.window_size == Some(0) {
            return Err(invalid(format!("{kernel}: window_size must be at least 1 (it counts the query's own key)")));
        }
        contiguous(kernel, &out)?;
        Ok(Geometry {
            batch,
            seq_q,
            seq_k,
            heads,
            kv_heads,
            head_dim,
            head_dim_v,
            scale,
            causal: args.is_causal,
            window: args.window_size.map(|w| w as usize),
            layout,
        })
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// The keys query row `i` may see, `lo..hi` (empty when the mask hides every key).
    /// Masks are bottom-right aligned: row `i` is at position `seq_k − seq_q + i`.
    fn visible(&self, i: usize) -> (usize, usize) {
        let seq_k = self.seq_k as i128;
        let p = seq_k - self.seq_q as i128 + i as i128;
        let hi = if self.causal { (p + 1).clamp(0, seq_k) } else { seq_k };
        let lo = self.window.map_or(0, |w| (p - w as i128 + 1).clamp(0, seq_k));
        // Both are clamped to 0..=seq_k, which is a usize.
        (lo as usize, hi.max(lo) as usize)
    }

    /// Splits the output into rows of `head_dim_v` and hands each to a task:
    /// `place(batch, seq, head)` says which task and which of its rows.
    fn distribute<'a, T>(
        &self,
        output: &'a mut [T],
        rows_per_task: &[usize],
        place: impl Fn(usize, usize, usize) -> (usize, usize),
    ) -> Vec<Vec<Option<&'a mut [T]>>> {
        let mut tasks: Vec<Vec<Option<&'a mut [T]>>> =
            rows_per_task.iter().map(|&n| std::iter::repeat_with(|| None).take(n).collect()).collect();
        let (sq, h) = (self.seq_q, self.heads);
        for (index, row) in output.chunks_mut(self.head_dim_v).enumerate() {
            let (b, s, head) = match self.layout {
                Layout::Bshd => (index / (h * sq), (index / h) % sq, index % h),
                Layout::Bhsd => (index / (h * sq), index % sq, (index / sq) % h),
            };
            let (task, slot) = place(b, s, head);
            if let Some(cell) = tasks.get_mut(task).and_then(|t| t.get_mut(slot)) {
                *cell = Some(row);
            }
        }
        tasks
    }
}

/// A query, key or value tensor as the kernels read it.
struct Source<'a, T> {
    data: &'a [T],
    axes: Axes,
}

impl<'a, T: CpuFloat> Source<'a, T> {
    fn new(view: &TensorView<'a>, layout: Layout) -> Result<Self, KernelError> {
        let s = view.strides();
        let axes = match layout {
            Layout::Bshd => Axes { batch: s[0], seq: s[1], head: s[2], dim: s[3] },
            Layout::Bhsd => Axes { batch: s[0], seq: s[2], head: s[1], dim: s[3] },
        };
        Ok(Source { data: view.strided_data::<T>()?, axes })
    }

    /// Row `seq` of head `head` in batch `b`, `width` channels, widened into `dst`.
    fn read_row(&self, b: usize, seq: usize, head: usize, dst: &mut [f32]) {
        let a = self.axes;
        let start = b * a.batch + seq * a.seq + head * a.head;
        if a.dim == 1 || dst.len() == 1 {
            T::widen_into(&self.data[start..start + dst.len()], dst);
        } else {
            for (c, d) in dst.iter_mut().enumerate() {
                *d = self.data[start + c * a.dim].to_f32();
            }
        }
    }

    /// Rows `seqs` of one head as a `seqs.len() × width` matrix: float32 data in place
    /// (through its strides, no copy), other types widened into `buf`.
    fn matrix<'b>(
        &'b self,
        b: usize,
        head: usize,
        seqs: std::ops::Range<usize>,
        width: usize,
        buf: &'b mut Vec<f32>,
    ) -> MatRef<'b> {
        let rows = seqs.len();
        if let Ok(data) = bytemuck::try_cast_slice::<T, f32>(self.data)
            && T::DTYPE == DType::F32
        {
            let a = self.axes;
            let start = b * a.batch + seqs.start * a.seq + head * a.head;
            return MatRef {
                data: &data[start.min(data.len())..],
                rows,
                cols: width,
                row_stride: a.seq,
                col_stride: a.dim,
            };
        }
        let packed = sized(buf, rows * width);
        self.read_rows(b, head, seqs, width, packed);
        MatRef::row_major(packed, rows, width)
    }

    /// Rows `seqs` of one head, packed row-major into `dst` (`width` per row).
    fn read_rows(&self, b: usize, head: usize, seqs: std::ops::Range<usize>, width: usize, dst: &mut [f32]) {
        for (row, seq) in dst.chunks_exact_mut(width).zip(seqs) {
            self.read_row(b, seq, head, row);
        }
    }
}

fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Per-task scratch memory, reused across the tasks a thread runs.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    s: Vec<f32>,
}

/// What a thread keeps between calls: more than this many floats per buffer is freed
/// after the task (the naive kernel's scores can be large; nothing else is).
const KEEP_FLOATS: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `task` with this thread's scratch memory, so tasks do not allocate and zero
/// their buffers anew (a fresh one if the thread's is somehow in use).
fn with_scratch<R>(task: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut guard) => {
            let scratch = &mut *guard;
            let result = task(scratch);
            for buf in [&mut scratch.q, &mut scratch.k, &mut scratch.v, &mut scratch.s] {
                if buf.len() > KEEP_FLOATS {
                    *buf = Vec::new();
                }
            }
            result
        }
        Err(_) => task(&mut Scratch::default()),
    })
}

/// The running state of an online softmax over some query rows: max, sum and the
/// unnormalised output, `rows × head_dim_v`.
struct Running {
    max: Vec<f32>,
    sum: Vec<f32>,
    out: Vec<f32>,
}

impl Running {
    fn new(rows: usize, head_dim_v: usize) -> Self {
        Running { max: vec![f32::NEG_INFINITY; rows], sum: vec![0.0; rows], out: vec![0.0; rows * head_dim_v] }
    }

    /// Divides by the sums; rows that saw no key are zero.
    fn finish(&mut self, head_dim_v: usize) {
        for (row, &sum) in self.out.chunks_exact_mut(head_dim_v).zip(&self.sum) {
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// Folds keys `keys` of KV head `kv_head` into `state`, for packed, pre-scaled queries `q`
/// (`ranges[i]` is what row `i` may see), `tile_k` keys at a time.
#[allow(clippy::too_many_arguments)]
fn online_softmax<T: CpuFloat>(
    g: &Geometry,
    key: &Source<'_, T>,
    value: &Source<'_, T>,
    b: usize,
    kv_head: usize,
    q: &[f32],
    ranges: &[(usize, usize)],
    keys: std::ops::Range<usize>,
    tile_k: usize,
    scratch: &mut Scratch,
    state: &mut Running,
) -> KernelResult {
    let (d, dv, rows) = (g.head_dim, g.head_dim_v, ranges.len());
    let mut k0 = keys.start;
    while k0 < keys.end {
        let k1 = (k0 + tile_k).min(keys.end);
        let tk = k1 - k0;
        k0 = k1;
        if !ranges.iter().any(|&(lo, hi)| lo < k1 && hi > k1 - tk) {
            continue;
        }
        let kt = key.matrix(b, kv_head, k1 - tk..k1, d, &mut scratch.k);
        let vt = value.matrix(b, kv_head, k1 - tk..k1, dv, &mut scratch.v);
        let s = sized(&mut scratch.s, rows * tk);
        // A few query rows (decode) are dot products and axpys over rows of K and V read in
        // place; more rows are worth gemm's packing.
        let direct = rows <= DIRECT_ROWS && kt.col_stride == 1 && vt.col_stride == 1;
        if direct {
            simd::dot_rows(q, d, kt.data, kt.row_stride, tk, s);
        } else {
            let q_mat = MatRef::row_major(q, rows, d);
            matmul(MatMut::row_major(s, rows, tk), false, q_mat, kt.t(), 1.0, 1)?;
        }
        for (i, row) in s.chunks_exact_mut(tk).enumerate() {
            let (lo, hi) = ranges[i];
            let (a, z) = (lo.max(k1 - tk) - (k1 - tk), hi.min(k1).saturating_sub(k1 - tk));
            if a >= z {
                row.fill(0.0);
                continue;
            }
            let tile_max = math::max(&row[a..z]);
            let old = state.max[i];
            let new = old.max(tile_max);
            let correction = if old == f32::NEG_INFINITY { 0.0 } else { math::exp(old - new) };
            row[..a].fill(0.0);
            row[z..].fill(0.0);
            let sum = simd::exp_shifted_sum(&mut row[a..z], new);
            state.max[i] = new;
            state.sum[i] = state.sum[i] * correction + sum;
            if correction != 1.0 {
                state.out[i * dv..(i + 1) * dv].iter_mut().for_each(|o| *o *= correction);
            }
        }
        if direct {
            simd::axpy_rows(s, tk, vt.data, vt.row_stride, dv, &mut state.out);
        } else {
            let p = MatRef::row_major(s, rows, tk);
            matmul(MatMut::row_major(&mut state.out, rows, dv), true, p, vt, 1.0, 1)?;
        }
    }
    Ok(())
}

/// Writes finished rows (`head_dim_v` each) into their output rows.
fn write_rows<T: CpuFloat>(rows: &[f32], dv: usize, outputs: Vec<Option<&mut [T]>>) {
    for (src, dst) in rows.chunks_exact(dv).zip(outputs) {
        if let Some(dst) = dst {
            T::narrow_into(src, dst);
        }
    }
}

fn scaled_queries<T: CpuFloat>(
    g: &Geometry,
    query: &Source<'_, T>,
    b: usize,
    head: usize,
    seqs: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    query.read_rows(b, head, seqs, g.head_dim, dst);
    dst.iter_mut().for_each(|x| *x *= g.scale);
}

fn tiled<T: CpuFloat>(args: &mut AttentionArgs<'_>, g: &Geometry) -> KernelResult {
    let (query, key, value) = (
        Source::<T>::new(&args.query, g.layout)?,
        Source::<T>::new(&args.key, g.layout)?,
        Source::<T>::new(&args.value, g.layout)?,
    );
    let q_tiles = g.seq_q.div_ceil(TILE_Q);
    let n_tasks = g.batch * g.heads * q_tiles;
    let rows: Vec<usize> = (0..n_tasks).map(|t| (g.seq_q - (t % q_tiles) * TILE_Q).min(TILE_Q)).collect();
    let output = args.output.as_mut_slice::<T>()?;
    let tasks = g.distribute(output, &rows, |b, s, h| ((b * g.heads + h) * q_tiles + s / TILE_Q, s % TILE_Q));
    tasks.into_par_iter().enumerate().try_for_each(|(task, outputs)| {
        with_scratch(|scratch| {
            let (bh, tile) = (task / q_tiles, task % q_tiles);
            let (b, h) = (bh / g.heads, bh % g.heads);
            let seqs = tile * TILE_Q..(tile * TILE_Q + TILE_Q).min(g.seq_q);
            let ranges: Vec<(usize, usize)> = seqs.clone().map(|i| g.visible(i)).collect();
            let mut q = std::mem::take(&mut scratch.q);
            let qt = sized(&mut q, ranges.len() * g.head_dim);
            scaled_queries(g, &query, b, h, seqs, qt);
            let mut state = Running::new(ranges.len(), g.head_dim_v);
            let first = ranges.iter().map(|r| r.0).min().unwrap_or(0);
            let last = ranges.iter().map(|r| r.1).max().unwrap_or(0);
            let result = online_softmax(
                g,
                &key,
                &value,
                b,
                h / g.group(),
                qt,
                &ranges,
                first..last,
                TILE_K,
                scratch,
                &mut state,
            );
            scratch.q = q;
            result?;
            state.finish(g.head_dim_v);
            write_rows(&state.out, g.head_dim_v, outputs);
            Ok(())
        })
    })
}

fn naive<T: CpuFloat>(args: &mut AttentionArgs<'_>, g: &Geometry) -> KernelResult {
    let (query, key, value) = (
        Source::<T>::new(&args.query, g.layout)?,
        Source::<T>::new(&args.key, g.layout)?,
        Source::<T>::new(&args.value, g.layout)?,
    );
    let (sq, sk, d, dv) = (g.seq_q, g.seq_k, g.head_dim, g.head_dim_v);
    let rows = vec![sq; g.batch * g.heads];
    let output = args.output.as_mut_slice::<T>()?;
    let tasks = g.distribute(output, &rows, |b, s, h| (b * g.heads + h, s));
    tasks.into_par_iter().enumerate().try_for_each(|(task, outputs)| {
        with_scratch(|scratch| {
            let (b, h) = (task / g.heads, task % g.heads);
            let kv_head = h / g.group();
            let q = sized(&mut scratch.q, sq * d);
            scaled_queries(g, &query, b, h, 0..sq, q);
            let k = key.matrix(b, kv_head, 0..sk, d, &mut scratch.k);
            let v = value.matrix(b, kv_head, 0..sk, dv, &mut scratch.v);
            let scores = sized(&mut scratch.s, sq * sk);
            matmul(MatMut::row_major(scores, sq, sk), false, MatRef::row_major(q, sq, d), k.t(), 1.0, 1)?;
            for (i, row) in scores.chunks_exact_mut(sk.max(1)).enumerate().take(sq) {
                let (lo, hi) = g.visible(i);
                let max = math::max(&row[lo..hi]);
                let sum = simd::exp_shifted_sum(&mut row[lo..hi], max);
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                row[lo..hi].iter_mut().for_each(|x| *x *= inv);
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
            }
            let mut out = vec![0.0; sq * dv];
            matmul(MatMut::row_major(&mut out, sq, dv), false, MatRef::row_major(scores, sq, sk), v, 1.0, 1)?;
            write_rows(&out, dv, outputs);
            Ok(())
        })
    })
}

fn split_kv<T: CpuFloat>(args: &mut AttentionArgs<'_>, g: &Geometry) -> KernelResult {
    let (query, key, value) = (
        Source::<T>::new(&args.query, g.layout)?,
        Source::<T>::new(&args.key, g.layout)?,
        Source::<T>::new(&args.value, g.layout)?,
    );
    let (group, sq, d, dv) = (g.group(), g.seq_q, g.head_dim, g.head_dim_v);
    let rows = group * sq;
    // Row r of a group is query head `kv_head · group + r / sq`, sequence position `r % sq`.
    let ranges: Vec<(usize, usize)> = (0..rows).map(|r| g.visible(r % sq)).collect();
    let first = ranges.iter().map(|r| r.0).min().unwrap_or(0);
    let last = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    let splits = (last - first).div_ceil(SPLIT_K).max(1);
    let groups = g.batch * g.kv_heads;
    let partials: Vec<Running> = (0..groups * splits)
        .into_par_iter()
        .map(|task| {
            with_scratch(|scratch| {
                let (bg, split) = (task / splits, task % splits);
                let (b, kv_head) = (bg / g.kv_heads, bg % g.kv_heads);
                let mut q = std::mem::take(&mut scratch.q);
                let qs = sized(&mut q, rows * d);
                for (r, head_rows) in qs.chunks_exact_mut(sq * d).enumerate() {
                    scaled_queries(g, &query, b, kv_head * group + r, 0..sq, head_rows);
                }
                let mut state = Running::new(rows, dv);
                let keys = first + split * SPLIT_K..(first + (split + 1) * SPLIT_K).min(last);
                let result =
                    online_softmax(g, &key, &value, b, kv_head, qs, &ranges, keys, SPLIT_K, scratch, &mut state);
                scratch.q = q;
                result.map(|()| state)
            })
        })
        .collect::<Result<_, _>>()?;
    let task_rows = vec![rows; groups];
    let output = args.output.as_mut_slice::<T>()?;
    let tasks = g.distribute(output, &task_rows, |b, s, h| (b * g.kv_heads + h / group, (h % group) * sq + s));
    tasks.into_par_iter().zip(partials.par_chunks(splits)).for_each(|(outputs, parts)| {
        let mut merged = Running::new(rows, dv);
        for r in 0..rows {
            let max = parts.iter().fold(f32::NEG_INFINITY, |m, p| m.max(p.max[r]));
            if max == f32::NEG_INFINITY {
                continue;
            }
            let out = &mut merged.out[r * dv..(r + 1) * dv];
            for p in parts {
                if p.max[r] == f32::NEG_INFINITY {
                    continue;
                }
                let weight = math::exp(p.max[r] - max);
                merged.sum[r] += p.sum[r] * weight;
                for (o, &x) in out.iter_mut().zip(&p.out[r * dv..(r + 1) * dv]) {
                    *o += x * weight;
                }
            }
        }
        merged.finish(dv);
        write_rows(&merged.out, dv, outputs);
    });
    Ok(())
}
