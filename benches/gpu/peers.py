"""PyTorch eager, torch.compile and liger-kernel on LayerZero's GPU anchor shapes (bf16),
with the device-to-device copy ceiling measured in the same run. GB/s counts logical reads
of every input plus writes of every output, as benches/gpu_bench.rs does.

python3 benches/gpu/peers.py   (liger is optional: carried as a wheel, see GPU.md §5)
"""
import torch
import torch.nn.functional as F
from triton.testing import do_bench

try:
    import liger_kernel.transformers.functional as LF
except ImportError:
    LF = None

torch.manual_seed(0)
dev = "cuda"
bf16 = torch.bfloat16


def gbps(fn, nbytes):
    ms = do_bench(fn, warmup=25, rep=200, return_mode="median")
    return nbytes / ms / 1e6


def report(name, shape, results):
    cells = "  ".join(f"{k} {v:7.0f}" for k, v in results.items() if v is not None)
    print(f"{name:<28} {shape:<16} {cells}   GB/s")


src = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
dst = torch.empty_like(src)
print(f"copy d2d ceiling: {gbps(lambda: dst.copy_(src), 2 * src.numel()):.0f} GB/s")
del src, dst

compiled_rms = torch.compile(lambda x, w: F.rms_norm(x, (x.shape[-1],), w, 1e-6))
for rows, hidden in [(16384, 4096), (65536, 4096), (4096, 8192)]:
    x = torch.randn(rows, hidden, device=dev, dtype=bf16)
    w = torch.randn(hidden, device=dev, dtype=bf16)
    nbytes = 2 * x.numel() * 2 + hidden * 2
    report("rms_norm", f"{rows}x{hidden}", {
        "eager": gbps(lambda: F.rms_norm(x, (hidden,), w, 1e-6), nbytes),
        "compile": gbps(lambda: compiled_rms(x, w), nbytes),
        "liger": gbps(lambda: LF.liger_rms_norm(x, w, 1e-6), nbytes) if LF else None,
    })
    del x

rows, hidden = 16384, 4096
x = torch.randn(rows, hidden, device=dev, dtype=bf16)
r = torch.randn(rows, hidden, device=dev, dtype=bf16)
w = torch.randn(hidden, device=dev, dtype=bf16)


def add_rms(x, r, w):
    s = x + r
    return F.rms_norm(s, (hidden,), w, 1e-6), s


compiled_add_rms = torch.compile(add_rms)
nbytes = 4 * x.numel() * 2 + hidden * 2
report("add+rms_norm (4 passes)", f"{rows}x{hidden}", {
    "eager": gbps(lambda: add_rms(x, r, w), nbytes),
    "compile": gbps(lambda: compiled_add_rms(x, r, w), nbytes),
    "liger": gbps(lambda: LF.liger_fused_add_rms_norm(x, r, w, 1e-6), nbytes) if LF else None,
})
del x, r

rows, hidden = 16384, 4096
x = torch.randn(rows, hidden, device=dev, dtype=bf16)
w = torch.randn(hidden, device=dev, dtype=bf16)
b = torch.randn(hidden, device=dev, dtype=bf16)
nbytes = 2 * x.numel() * 2 + 2 * hidden * 2
compiled_ln = torch.compile(lambda x, w, b: F.layer_norm(x, (hidden,), w, b, 1e-5))
report("layer_norm", f"{rows}x{hidden}", {
    "eager": gbps(lambda: F.layer_norm(x, (hidden,), w, b, 1e-5), nbytes),
    "compile": gbps(lambda: compiled_ln(x, w, b), nbytes),
    "liger": gbps(lambda: LF.liger_layer_norm(x, w, b, 1e-5), nbytes) if LF else None,
})
del x

tokens, d = 16384, 128
q = torch.randn(tokens, 32, d, device=dev, dtype=bf16)
k = torch.randn(tokens, 8, d, device=dev, dtype=bf16)
ang = torch.randn(tokens, d // 2, device=dev)
cos, sin = ang.cos(), ang.sin()


def rope_neox(x, cos, sin):
    x1, x2 = x[..., : d // 2].float(), x[..., d // 2 :].float()
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


compiled_rope = torch.compile(lambda q, k, c, s: (rope_neox(q, c, s), rope_neox(k, c, s)))
nbytes = 2 * (q.numel() + k.numel()) * 2 + 2 * cos.numel() * 4
results = {
    "eager": gbps(lambda: (rope_neox(q, cos, sin), rope_neox(k, cos, sin)), nbytes),
    "compile": gbps(lambda: compiled_rope(q, k, cos, sin), nbytes),
}
if LF:
    # liger takes [batch, heads, seq, head_dim] and cos/sin [1, seq, head_dim]
    ql, kl = q.transpose(0, 1)[None].contiguous(), k.transpose(0, 1)[None].contiguous()
    cl, sl = torch.cat([cos, cos], -1)[None].to(bf16), torch.cat([sin, sin], -1)[None].to(bf16)
    results["liger"] = gbps(lambda: LF.liger_rope(ql, kl, cl, sl), nbytes)
report("rope NeoX q+k", "16384x(32+8)x128", results)
del q, k

rows, inter = 16384, 14336
g = torch.randn(rows, inter, device=dev, dtype=bf16)
u = torch.randn(rows, inter, device=dev, dtype=bf16)
gu = torch.randn(rows, 2 * inter, device=dev, dtype=bf16)
nbytes = 3 * g.numel() * 2
compiled_swiglu = torch.compile(lambda g, u: F.silu(g) * u)
report("swiglu, two inputs", f"{rows}x{inter}", {
    "eager": gbps(lambda: F.silu(g) * u, nbytes),
    "compile": gbps(lambda: compiled_swiglu(g, u), nbytes),
    "liger": gbps(lambda: LF.liger_swiglu(g, u), nbytes) if LF else None,
})
compiled_fused = torch.compile(lambda gu: F.silu(gu[:, :inter]) * gu[:, inter:])
report("swiglu, fused gate-up", f"{rows}x2*{inter}", {
    "eager": gbps(lambda: F.silu(gu[:, :inter]) * gu[:, inter:], nbytes),
    "compile": gbps(lambda: compiled_fused(gu), nbytes),
})

for what, m, k, n in [("matmul prefill qkv", 16384, 4096, 6144), ("matmul prefill up", 16384, 4096, 14336),
                      ("matmul decode qkv", 32, 4096, 6144)]:
    a = torch.randn(m, k, device=dev, dtype=bf16)
    b = torch.randn(k, n, device=dev, dtype=bf16)
    ms = do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    print(f"{what:<28} {m}x{k}x{n:<8} torch {2 * m * k * n / ms / 1e9:7.0f} TFLOP/s  {k * n * 2 / ms / 1e6:7.0f} GB/s of B")
