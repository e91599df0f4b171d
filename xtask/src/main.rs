//! `cargo xtask`: LayerZero's build tasks.
//!
//! - `cargo xtask build-kernels [--check]`: compiles every `kernels/*.cu` to PTX with NVRTC
//!   12.9 (from the PyPI wheels `nvidia-cuda-nvrtc-cu12` and `nvidia-cuda-runtime-cu12`,
//!   whose folders it finds through `python3`) and writes `kernels/ptx/<name>.ptx`. With
//!   `--check` it writes nothing and fails when a checked-in PTX differs from a fresh build.
//! - `cargo xtask gpu-bundle`: builds the release GPU test and bench executables (feature
//!   `cuda`) and copies them, with a `run.sh` that runs checks then timings, into `.gpu/`,
//!   the folder to `carry` to the device machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::{env, fs};

/// The GPU architecture the PTX targets: Hopper (H100/H200). PTX for sm_90 is forward
/// compatible with later architectures through the driver's JIT.
const ARCH: &str = "sm_90";
const NVRTC_PIP: &str = "python3 -m pip install nvidia-cuda-nvrtc-cu12==12.9.86 'nvidia-cuda-runtime-cu12==12.9.*'";
const REEXEC_MARK: &str = "LAYERZERO_XTASK_REEXEC";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build-kernels") => build_kernels(args.iter().any(|a| a == "--check")),
        Some("gpu-bundle") => gpu_bundle(),
        _ => Err("usage: cargo xtask build-kernels [--check] | cargo xtask gpu-bundle".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn repo_root() -> PathBuf {
    // xtask/ sits at the root of the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The NVRTC library folder and the CUDA headers folder of the PyPI wheels (or of
/// `LZ_NVRTC_LIB` and `LZ_CUDA_INCLUDE` when both are set: to try another NVRTC).
fn nvrtc_folders() -> Result<(PathBuf, PathBuf), String> {
    if let (Some(lib), Some(include)) = (env::var_os("LZ_NVRTC_LIB"), env::var_os("LZ_CUDA_INCLUDE")) {
        return Ok((PathBuf::from(lib), PathBuf::from(include)));
    }
    let output = Command::new("python3")
        .args(["-c", "import site; print('\\n'.join(site.getsitepackages()))"])
        .output()
        .map_err(|e| format!("cannot run python3 to find the NVRTC wheel ({e}); install it with: {NVRTC_PIP}"))?;
    let sites = String::from_utf8_lossy(&output.stdout).into_owned();
    for site in sites.lines().map(PathBuf::from) {
        let lib = site.join("nvidia/cuda_nvrtc/lib");
        let include = site.join("nvidia/cuda_runtime/include");
        if lib.join("libnvrtc.so.12").exists() && include.join("cuda_bf16.h").exists() {
            return Ok((lib, include));
        }
    }
    Err(format!(
        "NVRTC 12.9 and the CUDA headers were not found in python3's site-packages; install them with: {NVRTC_PIP}"
    ))
}

/// cudarc opens libnvrtc by name, so its folder must be on the loader's path when the
/// process starts: if it is not, run this task again with it added.
fn ensure_loader_path(lib: &Path) -> Result<Option<ExitCode>, String> {
    let current = env::var("LD_LIBRARY_PATH").unwrap_or_default();
    if env::split_paths(&current).any(|p| p == lib) {
        return Ok(None);
    }
    if env::var_os(REEXEC_MARK).is_some() {
        return Err(format!("{} is on LD_LIBRARY_PATH but libnvrtc still cannot be loaded", lib.display()));
    }
    let paths = std::iter::once(lib.to_path_buf()).chain(env::split_paths(&current));
    let joined = env::join_paths(paths).map_err(|e| e.to_string())?;
    let exe = env::current_exe().map_err(|e| e.to_string())?;
    let status = Command::new(exe)
        .args(env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", joined)
        .env(REEXEC_MARK, "1")
        .status()
        .map_err(|e| e.to_string())?;
    Ok(Some(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE }))
}

fn build_kernels(check: bool) -> Result<(), String> {
    let (lib, include) = nvrtc_folders()?;
    if let Some(code) = ensure_loader_path(&lib)? {
        return if code == ExitCode::SUCCESS { Ok(()) } else { Err("build-kernels failed".into()) };
    }
    let kernels = repo_root().join("kernels");
    let mut sources: Vec<PathBuf> = fs::read_dir(&kernels)
        .map_err(|e| format!("cannot read {}: {e}", kernels.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    sources.sort();
    let ptx_dir = kernels.join("ptx");
    fs::create_dir_all(&ptx_dir).map_err(|e| e.to_string())?;

    let mut stale = Vec::new();
    for source in &sources {
        let name = source.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let code = fs::read_to_string(source).map_err(|e| format!("{}: {e}", source.display()))?;
        let options = cudarc::nvrtc::CompileOptions {
            arch: Some(ARCH),
            include_paths: vec![kernels.display().to_string(), include.display().to_string()],
            options: vec!["--std=c++17".into(), "-lineinfo".into()],
            name: Some(format!("kernels/{name}.cu")),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(&code, options)
            .map_err(|e| format!("kernels/{name}.cu does not compile:\n{e:?}"))?
            .to_src();
        // -lineinfo names source files by absolute path (`.file 1 "/home/.../kernels/x.cu"`);
        // make them relative to the repository so the PTX is the same in every checkout.
        let root_prefix = format!("\"{}/", repo_root().display());
        let ptx = ptx.replace(&root_prefix, "\"");
        let target = ptx_dir.join(format!("{name}.ptx"));
        let current = fs::read_to_string(&target).unwrap_or_default();
        if check {
            if current != ptx {
                stale.push(format!("kernels/ptx/{name}.ptx"));
            }
        } else if current != ptx {
            fs::write(&target, &ptx).map_err(|e| format!("{}: {e}", target.display()))?;
            println!("wrote kernels/ptx/{name}.ptx ({} bytes)", ptx.len());
        } else {
            println!("kernels/ptx/{name}.ptx is current");
        }
    }
    // A PTX file whose source is gone is stale too.
    for entry in fs::read_dir(&ptx_dir).map_err(|e| e.to_string())?.filter_map(Result::ok) {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "ptx") && !kernels.join(format!("{stem}.cu")).exists() {
            stale.push(format!("kernels/ptx/{stem}.ptx (no source)"));
        }
    }
    if stale.is_empty() {
        if check {
            println!("all {} PTX files are current", sources.len());
        }
        Ok(())
    } else {
        let mut message = String::from("stale PTX (run `cargo xtask build-kernels`):");
        for file in stale {
            let _ = write!(message, "\n  {file}");
        }
        Err(message)
    }
}

/// Builds the release executables of the given cargo command and returns their paths.
fn build_executables(args: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    let output = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        // `cargo bench` always builds with the optimised bench profile and takes no --release;
        // `cargo build` runs nothing, so takes no --no-run.
        .args(match args.first() {
            Some(&"test") => &["--release", "--no-run"][..],
            Some(&"build") => &["--release"][..],
            _ => &["--no-run"][..],
        })
        .args(["--message-format=json-render-diagnostics"])
        .current_dir(repo_root())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("cargo {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&output.stderr)));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let (Some(exe), Some(name)) = (message["executable"].as_str(), message["target"]["name"].as_str()) {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
        // A C library (`cdylib`) has no executable: its `.so` is among the artifact's files.
        let cdylib = message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        for file in message["filenames"].as_array().filter(|_| cdylib).into_iter().flatten() {
            let path = PathBuf::from(file.as_str().unwrap_or_default());
            if path.extension().is_some_and(|e| e == "so") {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                found.push((name, path));
            }
        }
    }
    Ok(found)
}

fn gpu_bundle() -> Result<(), String> {
    let root = repo_root();
    let bundle = root.join(".gpu");
    fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    let mut executables = build_executables(&[
        "test",
        "-p",
        "layerzero-tests",
        "--features",
        "cuda",
        "--test",
        "gpu_tensor",
        "--test",
        "gpu_kernels",
        "--test",
        "gpu_dispatch",
        "--test",
        "gpu_multi_device",
    ])?;
    executables.extend(build_executables(&[
        "bench",
        "-p",
        "layerzero-benches",
        "--features",
        "cuda",
        "--bench",
        "gpu_bench",
    ])?);
    // The `layerzero` binary with the CUDA backend, for `run --device cuda` on the device.
    executables.extend(build_executables(&["build", "-p", "layerzero-cli", "--features", "cuda"])?);
    // LayerZero's kernels callable from Python, for same_tensors.py, and its test.
    executables.extend(build_executables(&["build", "-p", "layerzero-bench-ffi", "--features", "cuda"])?);
    executables.extend(build_executables(&[
        "test",
        "-p",
        "layerzero-bench-ffi",
        "--features",
        "cuda",
        "--test",
        "ffi_gpu",
    ])?);
    for (name, exe) in &executables {
        let target = bundle.join(name);
        fs::copy(exe, &target).map_err(|e| format!("{}: {e}", exe.display()))?;
        let _ = Command::new("strip").arg(&target).status();
        println!("bundled {}", target.display());
    }
    for script in ["peers.py", "parity.py", "same_tensors.py"] {
        fs::copy(root.join("benches/gpu").join(script), bundle.join(script)).map_err(|e| format!("{script}: {e}"))?;
    }
    fs::write(bundle.join("run.sh"), RUN_SH).map_err(|e| e.to_string())?;
    println!("carry `.gpu` and run `bash .gpu/run.sh` on the device machine");
    Ok(())
}

const RUN_SH: &str = r#"#!/usr/bin/env bash
# Runs LayerZero's GPU checks, then its GPU timings, in one command on the device machine.
# Logs go to $OUT (or .gpu/out) so they come back.
set -uo pipefail
cd "$(dirname "$0")"
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
# cuBLAS (for matmul) is opened at run time by cudarc: the toolkit's folder holds libcublas.so.
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
ls /usr/local/cuda/targets/x86_64-linux/lib/libcublas.so* 2>/dev/null | tee "$OUT/cublas.txt"
status=0
for t in gpu_tensor gpu_kernels gpu_dispatch ffi_gpu; do
  [ -x "$t" ] || continue
  echo "== $t"; ./"$t" --test-threads 1 2>&1 | tee "$OUT/$t.log" | tail -4 || status=1
  # The sanitizers report every failed driver call; these tests make some on purpose (a
  # launch with another context current, which the launch path then retries; host memory
  # offered to the C interface, which the driver does not know).
  skip=(--skip a_launch_survives_another_context_made_current --skip host_memory_is_not_wrapped)
  echo "== memcheck $t"; compute-sanitizer --tool memcheck --error-exitcode 9 ./"$t" --test-threads 1 "${skip[@]}" > "$OUT/$t.memcheck.log" 2>&1 || status=1
  tail -1 "$OUT/$t.memcheck.log"
  echo "== racecheck $t"; compute-sanitizer --tool racecheck --error-exitcode 9 ./"$t" --test-threads 1 "${skip[@]}" > "$OUT/$t.racecheck.log" 2>&1 || status=1
  tail -1 "$OUT/$t.racecheck.log"
done
if [ -x gpu_multi_device ]; then
  # Several cards from one process (issue 13); every test skips, saying why, on one card.
  echo "== gpu_multi_device"
  ./gpu_multi_device --test-threads 1 --nocapture 2>&1 | tee "$OUT/gpu_multi_device.log" | tail -12 || status=1
  echo "== memcheck gpu_multi_device (fewer calls; the timed workload left out)"
  LZ_MULTI_GPU_CALLS=1000 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_multi_device --test-threads 1 \
    --skip a_memory_bound_workload > "$OUT/gpu_multi_device.memcheck.log" 2>&1 || status=1
  tail -1 "$OUT/gpu_multi_device.memcheck.log"
fi
if [ -x layerzero ]; then
  # The decoder layer on the GPU, every operation through the dispatcher, checked against
  # the CPU run of the same weights (exit 1 when a check fails).
  echo "== layerzero run --device cuda"
  ./layerzero run --device cuda --dtype bfloat16 2>&1 | tee "$OUT/run_cuda.txt" | tail -40 || status=1
  ./layerzero run --device cuda --dtype float32 > "$OUT/run_cuda_f32.txt" 2>&1 || status=1
  tail -3 "$OUT/run_cuda_f32.txt"
  # Every card at once, one thread each (two threads on one card where there is one):
  # each must give the one-card result.
  devices=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed 's/^ */cuda:/' | paste -sd, -)
  case "$devices" in *,*) ;; *) devices="$devices,$devices" ;; esac
  echo "== layerzero run --devices $devices"
  ./layerzero run --devices "$devices" --dtype bfloat16 --decode-steps 32 2>&1 | tee "$OUT/run_devices.txt" | tail -12 || status=1
fi
if [ -x gpu_bench ] && [ -f parity.py ]; then
  # Each kernel family and PyTorch on the same inputs, both against float64.
  echo "== parity with PyTorch"
  parity_dir=$(mktemp -d)
  LZ_PARITY_DIR="$parity_dir" ./gpu_bench > /dev/null && python3 parity.py "$parity_dir" 2>&1 | tee "$OUT/parity.txt" || status=1
  rm -rf "$parity_dir"
fi
if [ -x gpu_bench ]; then
  echo "== timings"; ./gpu_bench 2>&1 | tee "$OUT/bench.txt"
fi
if [ -f peers.py ]; then
  echo "== peers (PyTorch eager, torch.compile, liger)"; python3 peers.py 2>&1 | tee "$OUT/peers.txt"
fi
if [ -f same_tensors.py ] && [ -f liblayerzero_bench_ffi.so ]; then
  # LayerZero and the peers on the very same tensors, in rounds of fresh allocations
  # (exit 1 when LayerZero's output is off).
  echo "== LayerZero beside the peers on the same tensors"
  LZ_VERBOSE=1 python3 same_tensors.py 2>&1 | tee "$OUT/same_tensors.txt" || status=1
fi
if [ -x gpu_bench ]; then
  # The launch-overhead ratios move by a few percent from one process to the next: thirty
  # more processes, summarised by the median and its 95% interval (exit 1 when one fails).
  echo "== launch overhead, 30 processes"
  LZ_BENCH_LAUNCH_PROCESSES=30 ./gpu_bench 2>&1 | tee "$OUT/launch.txt" | tail -6 || status=1
fi
exit $status
"#;
