"""LayerZero's CUDA kernels against PyTorch on the same inputs.

`LZ_PARITY_DIR=DIR ./gpu_bench` runs each kernel family once on fresh bf16 inputs (odd
sizes among them) and writes inputs and outputs to DIR; this script loads them, runs
PyTorch (eager, on the GPU) on the same inputs, and prints, per case, the relative error
‖a − b‖ / ‖b‖ of LayerZero against a float64 reference, of PyTorch against it, and of
LayerZero against PyTorch. Exit status 1 when LayerZero is past 1e-2 of either.

python3 benches/gpu/parity.py DIR
"""
import math
import sys

import torch
import torch.nn.functional as F

TOLERANCE = 1e-2


def load(directory):
    """{case: (params, {name: tensor on the GPU})} from DIR/manifest.txt."""
    cases = {}
    for line in open(f"{directory}/manifest.txt"):
        case, params, name, dtype, dims, file = line.split()
        raw = bytearray(open(f"{directory}/{file}", "rb").read())
        shape = [int(d) for d in dims.split("x")]
        tensor = torch.frombuffer(raw, dtype=getattr(torch, dtype)).reshape(shape).to("cuda")
        cases.setdefault(case, (params, {}))[1][name] = tensor
    return cases


def param(params, key):
    return dict(p.split("=") for p in params.split(",") if "=" in p)[key]


def rel(a, b):
    a, b = a.double(), b.double()
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30)).item()


def rope_neox(x, cos, sin, offset):
    """x [b, s, h, d] rotated NeoX style at positions offset.., in `dtype` math."""
    seq, half = x.shape[1], x.shape[3] // 2
    c = cos[offset : offset + seq].to(x.dtype)[None, :, None, :]
    s = sin[offset : offset + seq].to(x.dtype)[None, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def expected(case, params, t):
    """(PyTorch's outputs, float64 references), dicts keyed like LayerZero's outputs."""
    d = {k: v.double() for k, v in t.items()}
    if case.startswith("rms_norm"):
        eps = float(param(params, "eps"))
        h = t["x"].shape[-1]
        ref = d["x"] * torch.rsqrt(d["x"].pow(2).mean(-1, keepdim=True) + eps) * d["w"]
        return {"y": F.rms_norm(t["x"], (h,), t["w"], eps)}, {"y": ref}
    if case.startswith("add_rms_norm"):
        eps = float(param(params, "eps"))
        h = t["x"].shape[-1]
        s = t["x"] + t["r"]  # stored in bf16, as the kernel stores it, then normalised
        sd = s.double()
        ref = sd * torch.rsqrt(sd.pow(2).mean(-1, keepdim=True) + eps) * d["w"]
        return {"y": F.rms_norm(s, (h,), t["w"], eps), "r_out": s}, {"y": ref, "r_out": sd}
    if case.startswith("layer_norm"):
        eps = float(param(params, "eps"))
        h = t["x"].shape[-1]
        ref = F.layer_norm(d["x"], (h,), d["w"], d["b"], eps)
        return {"y": F.layer_norm(t["x"], (h,), t["w"], t["b"], eps)}, {"y": ref}
    if case.startswith("rope"):
        offset = int(param(params, "offset"))
        torch_out = {
            "q_out": rope_neox(t["q"].float(), t["cos"], t["sin"], offset).to(t["q"].dtype),
            "k_out": rope_neox(t["k"].float(), t["cos"], t["sin"], offset).to(t["k"].dtype),
        }
        ref = {
            "q_out": rope_neox(d["q"], d["cos"], d["sin"], offset),
            "k_out": rope_neox(d["k"], d["cos"], d["sin"], offset),
        }
        return torch_out, ref
    if case == "swiglu":
        return {"out": F.silu(t["gate"]) * t["up"]}, {"out": F.silu(d["gate"]) * d["up"]}
    if case == "swiglu_fused":
        g, u = t["gate_up"].chunk(2, dim=-1)
        gd, ud = d["gate_up"].chunk(2, dim=-1)
        return {"out": F.silu(g) * u}, {"out": F.silu(gd) * ud}
    if case == "matmul":
        return {"out": t["a"] @ t["b"]}, {"out": d["a"] @ d["b"]}
    raise ValueError(f"unknown case {case}")


def main():
    directory = sys.argv[1]
    failed = 0
    print(f"{'case':<22} {'output':<7} {'LayerZero vs f64':>17} {'PyTorch vs f64':>15} {'LayerZero vs PyTorch':>21}")
    for case, (params, tensors) in sorted(load(directory).items()):
        torch_out, reference = expected(case, params, tensors)
        for name, ref in reference.items():
            ours = tensors[name]
            assert ours.shape == ref.shape, (case, name, ours.shape, ref.shape)
            finite = bool(torch.isfinite(ours).all())
            e_ours, e_torch, e_both = rel(ours, ref), rel(torch_out[name], ref), rel(ours, torch_out[name])
            ok = finite and e_ours <= TOLERANCE and e_both <= TOLERANCE and not math.isnan(e_ours)
            failed += not ok
            print(f"{case:<22} {name:<7} {e_ours:17.2e} {e_torch:15.2e} {e_both:21.2e}  {'ok' if ok else 'FAILED'}")
    print("all cases within 1e-2 of float64 and of PyTorch" if not failed else f"{failed} outputs FAILED")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
