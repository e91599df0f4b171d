"""rms_norm 4096x8192 bf16 with LayerZero's kernel (its PTX, launched through the driver with
ctypes), liger-kernel, torch.compile and a device-to-device copy on the same tensors, in one
process. peers.py times each library on tensors of its own, and at this shape where the
tensors lie moves every kernel (and the copy) by several percent.

First as peers.py runs: the rms_norm shapes in its order with its calls (so the 4096x8192
tensors are allocated after the same allocations), then six interleaved rounds on them. Then
eight fresh allocations, each with LayerZero writing into a buffer of its own and into the
very buffer liger's output lands in; `err` is the largest difference between LayerZero's
output and liger's. GB/s count logical bytes, as peers.py does.

python3 benches/gpu/same_tensors.py   (from the repository root; needs torch, triton and
liger-kernel, which GPU.md section 5 says how to carry)
"""
import ctypes, os, torch
import torch.nn.functional as F
from triton.testing import do_bench
import liger_kernel.transformers.functional as LF

here = os.path.dirname(os.path.abspath(__file__))
dev, bf16 = "cuda", torch.bfloat16
torch.manual_seed(0)


def gbps(fn, nbytes):
    return nbytes / do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e6


src = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
dst = torch.empty_like(src)
print(f"copy d2d ceiling: {gbps(lambda: dst.copy_(src), 2 * src.numel()):.0f} GB/s")
del src, dst

cu = ctypes.CDLL("libcuda.so.1")
module = ctypes.c_void_p()
ptx = open(os.path.join(here, "..", "..", "kernels", "ptx", "norm.ptx"), "rb").read() + b"\0"
assert cu.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(ptx)) == 0
wide = ctypes.c_void_p()
# The entry point LayerZero's rms_norm launches for rows of 513-1024 packs without a residual.
assert cu.cuModuleGetFunction(ctypes.byref(wide), module, b"rms_norm_block_bf16_v2_wide") == 0
ROWS, H = 4096, 8192
NBYTES = 2 * ROWS * H * 2 + H * 2


def layerzero(x, w, y):
    null = ctypes.c_void_p(0)
    vals = [ctypes.c_void_p(x.data_ptr()), ctypes.c_longlong(H), null, ctypes.c_longlong(0), null,
            ctypes.c_longlong(0), ctypes.c_void_p(w.data_ptr()), ctypes.c_void_p(y.data_ptr()),
            ctypes.c_longlong(H), ctypes.c_int(ROWS), ctypes.c_int(H), ctypes.c_float(1e-6)]
    params = (ctypes.c_void_p * len(vals))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in vals])
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    assert cu.cuLaunchKernel(wide, ROWS, 1, 1, 512, 1, 1, 0, stream, params, None) == 0


compiled_rms = torch.compile(lambda x, w: F.rms_norm(x, (x.shape[-1],), w, 1e-6))
print("as peers.py runs")
for rows, hidden in [(16384, 4096), (65536, 4096), (ROWS, H)]:
    x = torch.randn(rows, hidden, device=dev, dtype=bf16)
    w = torch.randn(hidden, device=dev, dtype=bf16)
    nbytes = 2 * x.numel() * 2 + hidden * 2
    eager = gbps(lambda: F.rms_norm(x, (hidden,), w, 1e-6), nbytes)
    compiled = gbps(lambda: compiled_rms(x, w), nbytes)
    liger = gbps(lambda: LF.liger_rms_norm(x, w, 1e-6), nbytes)
    print(f"  rms_norm {rows}x{hidden}: eager {eager:.0f} compile {compiled:.0f} liger {liger:.0f} GB/s", flush=True)
    if hidden == H:
        y = torch.empty_like(x)
        for rnd in range(6):
            ours = gbps(lambda: layerzero(x, w, y), NBYTES)
            liger = gbps(lambda: LF.liger_rms_norm(x, w, 1e-6), NBYTES)
            copy = gbps(lambda: y.copy_(x), 2 * x.numel() * 2)
            print(f"    round {rnd}: LayerZero {ours:.0f}  liger {liger:.0f}  copy {copy:.0f} GB/s", flush=True)
        del y
    del x

print("fresh allocations: LayerZero->y  LayerZero->liger's  liger  copy->y  copy->liger's  liger again")
w = torch.randn(H, device=dev, dtype=bf16)
keep = []
for trial in range(8):
    keep.append(torch.empty((trial * 37 + 5) << 20, dtype=torch.uint8, device=dev))  # moves what follows
    x = torch.randn(ROWS, H, device=dev, dtype=bf16)
    y = torch.empty_like(x)
    ly = LF.liger_rms_norm(x, w, 1e-6)
    layerzero(x, w, y)
    torch.cuda.synchronize()
    err = (y.float() - ly.float()).abs().max().item()
    row = [gbps(lambda: layerzero(x, w, y), NBYTES), gbps(lambda: layerzero(x, w, ly), NBYTES),
           gbps(lambda: LF.liger_rms_norm(x, w, 1e-6), NBYTES), gbps(lambda: y.copy_(x), NBYTES - H * 2),
           gbps(lambda: ly.copy_(x), NBYTES - H * 2), gbps(lambda: LF.liger_rms_norm(x, w, 1e-6), NBYTES)]
    print(f"  {trial}: " + "  ".join(f"{v:5.0f}" for v in row) + f"   err {err:.3f}", flush=True)
    del x, y, ly
