"""LayerZero's kernels beside PyTorch eager, torch.compile and liger-kernel on the very same
tensors, in one process, for every anchor shape of benches/gpu_bench.rs (bf16).

peers.py times each library on tensors of its own, in another process than gpu_bench. Where
a tensor lies in the card's memory moves a memory-bound kernel (and a copy) by several
percent at some shapes, so those figures compare placements as much as kernels. Here
LayerZero runs through liblayerzero_bench_ffi.so (benches/ffi: the library's own Rust
launch code, called with ctypes on PyTorch's tensors), and every library runs on the same
tensors, in rounds: each round allocates the shape's tensors afresh (after a pad that moves
where they land) and times every column once, in an order that turns each round.

Outputs are the same too: PyTorch and liger allocate theirs in each call, so LayerZero
(and the copy) write into outputs allocated just before their column is timed and freed
right after it, and PyTorch's caching allocator hands them the block a peer's output
gets (LZ_VERBOSE prints in how many rounds each column's first output lay where
LayerZero's did; an eager call that allocates a temporary first puts its output
elsewhere). An output allocated once beside the inputs
lands elsewhere, and a kernel writing there can run several percent faster or slower than
the same kernel writing where the peers' outputs land (rms_norm 4096x8192 on the H100).

Per shape it prints the median GB/s of each column over the rounds; `copy` is
`y.copy_(x)` on the shape's own input and output (GB/s of the bytes it moves); `LZ/best`
is LayerZero over the best peer, the median of the rounds' ratios with the lowest in
brackets; `err` is LayerZero's largest difference from a float32 reference, relative to
the reference's largest magnitude. GB/s count logical bytes as peers.py and gpu_bench do.

    cargo build --release -p layerzero-bench-ffi --features cuda
    python3 benches/gpu/same_tensors.py      (needs torch and triton; liger-kernel is
                                              optional, GPU.md section 5 says how to carry it)

LZ_BENCH_FFI names the library if it is not next to this script (as `cargo xtask
gpu-bundle` puts it) or in target/release; LZ_ROUNDS sets the rounds (default 5);
LZ_VERBOSE=1 prints every round's figures under each shape.
"""
import ctypes, os, statistics, sys
import torch
import torch.nn.functional as F
from triton.testing import do_bench

try:
    import liger_kernel.transformers.functional as LF
except ImportError:
    LF = None

here = os.path.dirname(os.path.abspath(__file__))
dev, bf16, BF16 = "cuda", torch.bfloat16, 0
ROUNDS = int(os.environ.get("LZ_ROUNDS", "5"))
VERBOSE = os.environ.get("LZ_VERBOSE", "") not in ("", "0")


def find_library():
    candidates = [os.environ.get("LZ_BENCH_FFI"), os.path.join(here, "liblayerzero_bench_ffi.so"),
                  os.path.join(here, "..", "..", "target", "release", "liblayerzero_bench_ffi.so")]
    for path in candidates:
        if path and os.path.exists(path):
            return path
    sys.exit("liblayerzero_bench_ffi.so not found: `cargo build --release -p layerzero-bench-ffi "
             "--features cuda`, or set LZ_BENCH_FFI")


lib = ctypes.CDLL(find_library())
P, Z, U, F32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_float
for name, args in {
    "lz_open": [U], "lz_close": [P], "lz_wrap": [P, ctypes.c_uint64, Z], "lz_release": [P],
    "lz_last_error": [ctypes.c_char_p, Z],
    "lz_rms_norm": [P, P, P, P, P, P, Z, Z, U, F32],
    "lz_layer_norm": [P, P, P, P, P, Z, Z, U, F32],
    "lz_rope_neox_qk": [P, P, P, P, P, Z, Z, Z, Z, Z, U, Z],
    "lz_swiglu": [P, P, P, P, Z, Z, U],
}.items():
    getattr(lib, name).argtypes = args
lib.lz_open.restype = lib.lz_wrap.restype = P
lib.lz_last_error.restype = Z
for name in ["lz_rms_norm", "lz_layer_norm", "lz_rope_neox_qk", "lz_swiglu"]:
    getattr(lib, name).restype = ctypes.c_int


def last_error():
    buf = ctypes.create_string_buffer(1024)
    lib.lz_last_error(buf, len(buf))
    return buf.value.decode()


def ok(rc):
    if rc != 0:
        raise RuntimeError(f"LayerZero: {last_error()}")


torch.zeros(1, device=dev)  # PyTorch's context first; LayerZero opens the same (primary) one
gpu = lib.lz_open(torch.cuda.current_device())
if not gpu:
    sys.exit(f"LayerZero: {last_error()}")


class Handles:
    """LayerZero's handles on PyTorch tensors' memory, released when the round ends."""

    def __init__(self):
        self.held = []

    def __call__(self, t):
        h = lib.lz_wrap(gpu, t.data_ptr(), t.numel() * t.element_size())
        if not h:
            raise RuntimeError(f"LayerZero: {last_error()}")
        self.held.append(h)
        return h

    def release(self):
        torch.cuda.synchronize()
        for h in self.held:
            lib.lz_release(h)
        self.held.clear()


def gbps(fn, nbytes):
    return nbytes / do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e6


def rel_err(got, want):
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def rope_neox(x, cos, sin):
    d = x.shape[-1]
    x1, x2 = x[..., : d // 2].float(), x[..., d // 2:].float()
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


compiled_rms = torch.compile(lambda x, w: F.rms_norm(x, (x.shape[-1],), w, 1e-6))
compiled_ln = torch.compile(lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5))
compiled_rope = torch.compile(lambda q, k, c, s: (rope_neox(q, c, s), rope_neox(k, c, s)))
compiled_swiglu = torch.compile(lambda g, u: F.silu(g) * u)


def add_rms(x, r, w):
    s = x + r
    return F.rms_norm(s, (x.shape[-1],), w, 1e-6), s


compiled_add_rms = torch.compile(add_rms)


class Out:
    """A column that writes into outputs of `shapes` (bf16), allocated just before it is
    timed and freed right after: `run(outs, handles)` is the timed call, `nbytes` the bytes
    it moves when not the case's."""

    def __init__(self, shapes, run, nbytes=None):
        self.shapes, self.run, self.nbytes = shapes, run, nbytes


def checked(shapes, run, reference):
    """Runs a LayerZero column once into fresh outputs; its error against `reference(outs)`."""
    wrap = Handles()
    outs = [torch.empty(shape, device=dev, dtype=bf16) for shape in shapes]
    run(outs, [wrap(o) for o in outs])
    err = reference(outs)
    wrap.release()
    return err


# Each case returns its title and a `make(wrap)` that allocates the shape's inputs, runs
# LayerZero once to check it, and returns (columns, logical bytes, LayerZero's error); a
# column is a callable (a peer, allocating its own output), or an Out.
def rms_norm(rows, hidden):
    def make(wrap):
        x = torch.randn(rows, hidden, device=dev, dtype=bf16)
        w = torch.randn(hidden, device=dev, dtype=bf16)
        hx, hw = wrap(x), wrap(w)
        lz = lambda o, h: ok(lib.lz_rms_norm(gpu, hx, None, None, hw, h[0], rows, hidden, BF16, 1e-6))
        err = checked([x.shape], lz, lambda o: rel_err(o[0], F.rms_norm(x.float(), (hidden,), w.float(), 1e-6)))
        cols = {"LayerZero": Out([x.shape], lz), "eager": lambda: F.rms_norm(x, (hidden,), w, 1e-6),
                "compile": lambda: compiled_rms(x, w)}
        if LF:
            cols["liger"] = lambda: LF.liger_rms_norm(x, w, 1e-6)
        cols["copy"] = Out([x.shape], lambda o, h: o[0].copy_(x), 2 * x.numel() * 2)
        return cols, 2 * x.numel() * 2 + hidden * 2, err
    return f"rms_norm {rows}x{hidden}", make


def add_rms_norm(rows, hidden):
    def make(wrap):
        x, r = (torch.randn(rows, hidden, device=dev, dtype=bf16) for _ in range(2))
        w = torch.randn(hidden, device=dev, dtype=bf16)
        hx, hr, hw = wrap(x), wrap(r), wrap(w)
        # y, then the sum: the order liger allocates its two outputs in.
        lz = lambda o, h: ok(lib.lz_rms_norm(gpu, hx, hr, h[1], hw, h[0], rows, hidden, BF16, 1e-6))
        s = x.float() + r.float()
        err = checked([x.shape, x.shape], lz,
                      lambda o: max(rel_err(o[0], F.rms_norm(s, (hidden,), w.float(), 1e-6)), rel_err(o[1], s)))
        cols = {"LayerZero": Out([x.shape, x.shape], lz), "eager": lambda: add_rms(x, r, w),
                "compile": lambda: compiled_add_rms(x, r, w)}
        if LF:
            cols["liger"] = lambda: LF.liger_fused_add_rms_norm(x, r, w, 1e-6)
        cols["copy"] = Out([x.shape], lambda o, h: o[0].copy_(x), 2 * x.numel() * 2)
        return cols, 4 * x.numel() * 2 + hidden * 2, err
    return f"add+rms_norm {rows}x{hidden}", make


def layer_norm(rows, hidden):
    def make(wrap):
        x = torch.randn(rows, hidden, device=dev, dtype=bf16)
        w, b = (torch.randn(hidden, device=dev, dtype=bf16) for _ in range(2))
        hx, hw, hb = wrap(x), wrap(w), wrap(b)
        lz = lambda o, h: ok(lib.lz_layer_norm(gpu, hx, hw, hb, h[0], rows, hidden, BF16, 1e-5))
        err = checked([x.shape], lz,
                      lambda o: rel_err(o[0], F.layer_norm(x.float(), (hidden,), w.float(), b.float(), 1e-5)))
        cols = {"LayerZero": Out([x.shape], lz), "eager": lambda: F.layer_norm(x, (hidden,), w, b, 1e-5),
                "compile": lambda: compiled_ln(x, w, b)}
        if LF:
            cols["liger"] = lambda: LF.liger_layer_norm(x, w, b, 1e-5)
        cols["copy"] = Out([x.shape], lambda o, h: o[0].copy_(x), 2 * x.numel() * 2)
        return cols, 2 * x.numel() * 2 + 2 * hidden * 2, err
    return f"layer_norm {rows}x{hidden}", make


def rope(tokens, q_heads, k_heads, d):
    def make(wrap):
        q = torch.randn(tokens, q_heads, d, device=dev, dtype=bf16)
        k = torch.randn(tokens, k_heads, d, device=dev, dtype=bf16)
        ang = torch.randn(tokens, d // 2, device=dev)
        cos, sin = ang.cos(), ang.sin()
        want = rope_neox(q, cos, sin), rope_neox(k, cos, sin)
        hq, hk, hc, hs = wrap(q), wrap(k), wrap(cos), wrap(sin)
        lz = lambda: ok(lib.lz_rope_neox_qk(gpu, hq, hk, hc, hs, tokens, q_heads, k_heads, d, tokens, BF16, 0))
        lz()  # in place: q and k now hold the rotation, to check
        err = max(rel_err(q, want[0]), rel_err(k, want[1]))
        cols = {"LayerZero": lz, "eager": lambda: (rope_neox(q, cos, sin), rope_neox(k, cos, sin)),
                "compile": lambda: compiled_rope(q, k, cos, sin)}
        if LF:
            # liger takes [batch, heads, seq, head_dim]: copies of q and k in that layout,
            # the one column not on the same tensors.
            ql, kl = q.transpose(0, 1)[None].contiguous(), k.transpose(0, 1)[None].contiguous()
            cl, sl = torch.cat([cos, cos], -1)[None].to(bf16), torch.cat([sin, sin], -1)[None].to(bf16)
            cols["liger*"] = lambda: LF.liger_rope(ql, kl, cl, sl)
        cols["copy"] = Out([q.shape], lambda o, h: o[0].copy_(q), 2 * q.numel() * 2)  # of q
        return cols, 2 * (q.numel() + k.numel()) * 2 + 2 * cos.numel() * 4, err
    return f"rope NeoX q+k {tokens}x({q_heads}+{k_heads})x{d}", make


def swiglu(rows, inter, fused):
    def make(wrap):
        shape = (rows, inter)
        if fused:
            gu = torch.randn(rows, 2 * inter, device=dev, dtype=bf16)
            g, u = gu[:, :inter], gu[:, inter:]
            hgu = wrap(gu)
            lz = lambda o, h: ok(lib.lz_swiglu(gpu, hgu, None, h[0], rows, inter, BF16))
        else:
            g, u = (torch.randn(rows, inter, device=dev, dtype=bf16) for _ in range(2))
            hg, hu = wrap(g), wrap(u)
            lz = lambda o, h: ok(lib.lz_swiglu(gpu, hg, hu, h[0], rows, inter, BF16))
        err = checked([shape], lz, lambda o: rel_err(o[0], F.silu(g.float()) * u.float()))
        cols = {"LayerZero": Out([shape], lz), "eager": lambda: F.silu(g) * u, "compile": lambda: compiled_swiglu(g, u)}
        if LF and not fused:
            cols["liger"] = lambda: LF.liger_swiglu(g, u)
        src = gu.view(-1)[: rows * inter].view(shape) if fused else g  # contiguous bytes
        cols["copy"] = Out([shape], lambda o, h: o[0].copy_(src), 2 * rows * inter * 2)
        return cols, 3 * rows * inter * 2, err
    return f"swiglu {'fused ' if fused else ''}{rows}x{'2*' if fused else ''}{inter}", make


CASES = [rms_norm(16384, 4096), rms_norm(65536, 4096), rms_norm(4096, 8192), add_rms_norm(16384, 4096),
         layer_norm(16384, 4096), rope(16384, 32, 8, 128), swiglu(16384, 14336, False), swiglu(16384, 14336, True)]

src = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
dst = torch.empty_like(src)
print(f"{torch.cuda.get_device_name()}: copy d2d ceiling {gbps(lambda: dst.copy_(src), 2 * src.numel()):.0f} GB/s; "
      f"{ROUNDS} rounds a shape; liger {'present' if LF else 'absent'}", flush=True)
del src, dst

def first_tensor(result):
    """The first tensor a peer's call returns (its output), or None."""
    if isinstance(result, (tuple, list)):
        result = result[0] if result else None
    return result if torch.is_tensor(result) else None


def time_column(column, nbytes):
    """GB/s of one column, and where its (first) output lay."""
    if isinstance(column, Out):
        wrap = Handles()
        outs = [torch.empty(shape, device=dev, dtype=bf16) for shape in column.shapes]
        handles = [wrap(o) for o in outs]
        address = outs[0].data_ptr()
        got = gbps(lambda: column.run(outs, handles), column.nbytes or nbytes)
        wrap.release()
        del outs
        return got, address
    out = first_tensor(column())
    address = out.data_ptr() if out is not None else None
    del out
    return gbps(column, nbytes), address


worst_err, failed = 0.0, False
for title, make in CASES:
    per_col, ratios, case_err, shared = {}, [], 0.0, {}
    for rnd in range(ROUNDS):
        pad = torch.empty((rnd * 37 + 5) << 20, dtype=torch.uint8, device=dev)  # moves what follows
        wrap = Handles()
        cols, nbytes, err = make(wrap)
        case_err = max(case_err, err)
        names = list(cols)
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        got, addresses = {}, {}
        for name in order:
            got[name], addresses[name] = time_column(cols[name], nbytes)
            per_col.setdefault(name, []).append(got[name])
        # Which columns wrote their (first) output where LayerZero wrote its own.
        if addresses["LayerZero"] is not None:
            for name, address in addresses.items():
                if name != "LayerZero":
                    shared[name] = shared.get(name, 0) + (address == addresses["LayerZero"])
        peers = [v for n, v in got.items() if n not in ("LayerZero", "copy")]
        ratios.append(got["LayerZero"] / max(peers))
        wrap.release()
        del cols, pad
        torch.cuda.empty_cache()
    cells = "  ".join(f"{n} {statistics.median(v):5.0f}" for n, v in per_col.items())
    lz_copy = statistics.median(per_col["LayerZero"]) / statistics.median(per_col["copy"])
    print(f"{title:<34} {cells}  GB/s   LZ/best {statistics.median(ratios):.3f} [{min(ratios):.3f}]  "
          f"LZ/copy {lz_copy:.3f}  err {case_err:.1e}", flush=True)
    if VERBOSE:
        for name, values in per_col.items():
            print(f"    {name:<10} " + " ".join(f"{v:5.0f}" for v in values))
        print("    LZ/best    " + " ".join(f"{r:5.3f}" for r in ratios))
        if shared:
            print("    output in LayerZero's block, rounds: " + ", ".join(f"{n} {k}" for n, k in shared.items()))
    worst_err = max(worst_err, case_err)
    failed |= not case_err <= 2e-2

lib.lz_close(gpu)
print(f"largest relative error {worst_err:.1e} (bf16: within 2e-2)" + ("  FAILED" if failed else ""))
sys.exit(1 if failed else 0)
