"""rms_norm 4096x8192 bf16 on the same tensors: LayerZero's kernel (its PTX, launched through the
driver with ctypes), liger-kernel and a device-to-device copy, on eight fresh allocations each,
and LayerZero writing into the very buffer liger's output lands in; `err` is the largest
difference between the two outputs. peers.py times each library on tensors of its own; this
puts them on the same ones. GB/s count logical bytes, as peers.py does.

python3 benches/gpu/same_tensors.py   (from the repository root; needs torch, triton and
liger-kernel, which GPU.md section 5 says how to carry)
"""
import ctypes, os, torch
from triton.testing import do_bench
import liger_kernel.transformers.functional as LF
here = os.path.dirname(os.path.abspath(__file__))
torch.empty(1, device="cuda")
cu = ctypes.CDLL("libcuda.so.1")
pm = ctypes.c_void_p(); ptx = open(os.path.join(here, "..", "..", "kernels", "ptx", "norm.ptx"), "rb").read() + b"\0"
assert cu.cuModuleLoadData(ctypes.byref(pm), ctypes.c_char_p(ptx)) == 0
f = ctypes.c_void_p(); assert cu.cuModuleGetFunction(ctypes.byref(f), pm, b"rms_norm_block_bf16_v2_wide") == 0
rows, H = 4096, 8192
def ours(x, w, y):
    null = ctypes.c_void_p(0)
    vals = [ctypes.c_void_p(x.data_ptr()), ctypes.c_longlong(H), null, ctypes.c_longlong(0), null, ctypes.c_longlong(0), ctypes.c_void_p(w.data_ptr()), ctypes.c_void_p(y.data_ptr()), ctypes.c_longlong(H), ctypes.c_int(rows), ctypes.c_int(H), ctypes.c_float(1e-6)]
    arr = (ctypes.c_void_p * len(vals))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in vals])
    r = cu.cuLaunchKernel(f, rows, 1, 1, 512, 1, 1, 0, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream), arr, None); assert r == 0, r
nb = 2 * rows * H * 2 + H * 2
g = lambda fn: nb / do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e6
torch.manual_seed(0)
w = torch.randn(H, device="cuda", dtype=torch.bfloat16)
keep = []
print("trial  x_addr%2MiB  ours->y  ours->ligerY  liger  copy->y  copy->ligerY  liger_again")
for trial in range(8):
    keep.append(torch.empty((trial * 37 + 5) << 20, dtype=torch.uint8, device="cuda"))  # shift the next allocations
    x = torch.randn(rows, H, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    ly = LF.liger_rms_norm(x, w, 1e-6)
    ref = ly.float()
    ours(x, w, y); torch.cuda.synchronize()
    err = (y.float() - ref).abs().max().item()
    a = g(lambda: ours(x, w, y)); b = g(lambda: ours(x, w, ly)); c = g(lambda: LF.liger_rms_norm(x, w, 1e-6))
    d = g(lambda: y.copy_(x)); e = g(lambda: ly.copy_(x)); c2 = g(lambda: LF.liger_rms_norm(x, w, 1e-6))
    print(f"{trial:5d}  {x.data_ptr() % (2 << 20):10d}  {a:7.0f}  {b:12.0f}  {c:5.0f}  {d:7.0f}  {e:12.0f}  {c2:11.0f}   err {err:.3f}", flush=True)
    del x, y, ly
