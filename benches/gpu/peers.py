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
