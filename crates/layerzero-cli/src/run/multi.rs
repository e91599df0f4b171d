//! `run --devices A,B,...`: the decoder layers (prefill, then the decode steps) on several
//! devices at once, one thread per device, every operation through one dispatcher, as an
//! engine that drives one model replica per card from one process does.
//!
//! First the first device runs alone (checked against the float64 reference unless
//! `--no-check`): the one-device result and time. Then every device runs at once, each on
//! its own thread; each output is compared with the one-device output, and the throughput
//! of all of them together is compared with the one device's. Selection, breakers and
//! telemetry are per device (a context's device is part of the selection key, breakers
//! are per (kernel, device)), so the threads share nothing that one card's failure could
//! spoil for another.

use std::io::Write;
use std::time::Instant;

use layerzero::types::Device;

use super::{Model, Outcome, RunArgs, default_tolerance, execute_in_dtype, format_duration, reference};
use crate::dispatcher::{Dispatch, DispatchOptions, build_dispatcher};
use crate::error::CliError;
use crate::table::{Table, colour_enabled, status};

/// Where one device's run ran and what it gave.
struct DeviceRun {
    device: Device,
    outcome: Outcome,
}

/// The largest relative difference between two outputs.
fn difference(a: &[f32], b: &[f32]) -> f64 {
    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    reference::max_rel_error(&widen(a), &widen(b))
}

/// The GPUs the CUDA entries of `devices` name, opened and registered once.
#[cfg(feature = "cuda")]
struct Cards(Option<super::device::Gpus>);

#[cfg(feature = "cuda")]
impl Cards {
    fn open(devices: &[Device]) -> Result<Cards, CliError> {
        let Some(&first) = devices.iter().find(|d| matches!(d, Device::Cuda(_))) else {
            return Ok(Cards(None));
        };
        let gpus = super::device::open(first)?;
        for device in devices {
            if let Device::Cuda(_) = device {
                gpus.on(*device)?; // every card named must exist, before any work starts
            }
        }
        super::device::register(&gpus)?;
        Ok(Cards(Some(gpus)))
    }
}

/// Runs the model on `device` with `dispatch` (checked against the reference when `check`).
fn run_on(
    model: &Model,
    args: &RunArgs,
    dispatch: &Dispatch,
    device: Device,
    check: bool,
    #[cfg(feature = "cuda")] cards: &Cards,
) -> Result<Outcome, CliError> {
    match device {
        Device::Cpu => execute_in_dtype(model, args, dispatch, check),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(super::no_cuda_build()),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            let gpus = match &cards.0 {
                Some(gpus) => gpus.on(device)?,
                None => return Err(CliError::usage(format!("{device} was not opened"))),
            };
            let args = RunArgs { no_check: !check, ..args.clone() };
            super::execute_cuda_in_dtype(model, &args, dispatch, &gpus)
        }
    }
}

/// `layerzero run --devices ...`.
pub(super) fn run_devices(model: &Model, args: &RunArgs, devices: &[Device]) -> Result<(), CliError> {
    if devices.is_empty() {
        return Err(CliError::usage("--devices needs at least one device (cpu, cuda:N)"));
    }
    #[cfg(not(feature = "cuda"))]
    if devices.iter().any(|d| matches!(d, Device::Cuda(_))) {
        return Err(super::no_cuda_build());
    }
    #[cfg(feature = "cuda")]
    let cards = Cards::open(devices)?;
    let dispatch = build_dispatcher(&DispatchOptions { config: args.config.clone(), mode: args.mode })?;
    // Progress bars from several threads would interleave: the threads run quietly.
    let quiet = RunArgs { json: true, ..args.clone() };
    let run = |device, check| {
        run_on(
            model,
            &quiet,
            &dispatch,
            device,
            check,
            #[cfg(feature = "cuda")]
            &cards,
        )
    };

    // The first device alone: checked against float64 (unless --no-check), then again
    // unchecked for the result every device must give and the time to beat (the checks
    // run on the host and would inflate it).
    let checks_failed = if args.no_check {
        0
    } else {
        let tolerance = args.tolerance.unwrap_or_else(|| default_tolerance(args.dtype));
        let checked = run(devices[0], true)?;
        checked.rows.iter().filter(|r| r.max_rel_error.is_some_and(|e| e.is_nan() || e > tolerance)).count()
    };
    let alone = run(devices[0], false)?;
    let start = Instant::now();
    let together: Vec<Result<DeviceRun, CliError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = devices
            .iter()
            .map(|&device| scope.spawn(move || run(device, false).map(|outcome| DeviceRun { device, outcome })))
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread.join().unwrap_or_else(|_| Err(CliError::Invalid("a device thread panicked".to_owned())))
            })
            .collect()
    });
    let wall = start.elapsed();
    let together = together.into_iter().collect::<Result<Vec<_>, _>>()?;

    let tolerance = args.tolerance.unwrap_or_else(|| default_tolerance(args.dtype));
    let differences: Vec<(f64, f64)> = together
        .iter()
        .map(|r| {
            (difference(&r.outcome.output, &alone.output), difference(&r.outcome.decode_output, &alone.decode_output))
        })
        .collect();
    let mismatched: Vec<String> = together
        .iter()
        .zip(&differences)
        .filter(|(_, (prefill, decode))| !(*prefill <= tolerance && *decode <= tolerance))
        .map(|(r, _)| r.device.to_string())
        .collect();
    let tokens = (model.shapes.seq + model.shapes.decode_steps) as f64;
    let throughput_ratio = devices.len() as f64 * alone.elapsed.as_secs_f64() / wall.as_secs_f64();
    let telemetry = dispatch.telemetry();
    let passed = checks_failed == 0 && mismatched.is_empty();

    let mut out = std::io::stdout().lock();
    if args.json {
        let runs: Vec<_> = together
            .iter()
            .zip(&differences)
            .map(|(r, (prefill, decode))| {
                serde_json::json!({
                    "device": r.device.to_string(),
                    "elapsed_ms": r.outcome.elapsed.as_secs_f64() * 1e3,
                    "tokens_per_s": tokens / r.outcome.elapsed.as_secs_f64(),
                    "prefill_max_rel_diff": prefill,
                    "decode_max_rel_diff": decode,
                })
            })
            .collect();
        let report = serde_json::json!({
            "devices": devices.iter().map(Device::to_string).collect::<Vec<_>>(),
            "dtype": args.dtype.as_str(),
            "shapes": model.shapes,
            "mode": dispatch.mode.as_str().to_lowercase(),
            "alone": {
                "device": devices[0].to_string(),
                "elapsed_ms": alone.elapsed.as_secs_f64() * 1e3,
                "checked": !args.no_check,
                "checks_failed": checks_failed,
            },
            "together": runs,
            "wall_ms": wall.as_secs_f64() * 1e3,
            "throughput_ratio": throughput_ratio,
            "tolerance": tolerance,
            "telemetry_by_device": telemetry.devices,
            "passed": passed,
            "mismatched": mismatched,
        });
        crate::table::write_json(&mut out, &report)?;
    } else {
        let colour = colour_enabled();
        let shapes = &model.shapes;
        writeln!(
            out,
            "decoder: {} layers, hidden {}, {} dtype; prefill {} tokens, then {} decode steps; mode {} ({})",
            shapes.layers,
            shapes.hidden,
            args.dtype,
            shapes.seq,
            shapes.decode_steps,
            dispatch.mode.as_str().to_lowercase(),
            dispatch.mode_note
        )?;
        let checked = if args.no_check {
            "unchecked (--no-check)".to_owned()
        } else if checks_failed == 0 {
            format!("all {} checks passed against float64", alone.rows.len())
        } else {
            format!("{checks_failed} of {} checks FAILED against float64", alone.rows.len())
        };
        writeln!(out, "{} alone: {}; {checked}", devices[0], format_duration(alone.elapsed))?;
        writeln!(out, "all {} devices at once, one thread each, one dispatcher:", devices.len())?;
        let mut table = Table::new(["device", "time", "tokens/s", "vs alone: prefill", "decode", "same"]);
        for (r, (prefill, decode)) in together.iter().zip(&differences) {
            table.row(vec![
                r.device.to_string(),
                format_duration(r.outcome.elapsed),
                format!("{:.0}", tokens / r.outcome.elapsed.as_secs_f64()),
                format!("{prefill:.1e}"),
                format!("{decode:.1e}"),
                status(*prefill <= tolerance && *decode <= tolerance, colour),
            ]);
        }
        write!(out, "{}", table.render())?;
        writeln!(
            out,
            "wall time {} for {} runs; {} alone took {}: throughput {throughput_ratio:.2}x one device",
            format_duration(wall),
            devices.len(),
            devices[0],
            format_duration(alone.elapsed)
        )?;
        for device in telemetry.devices.iter().filter(|d| d.successes + d.errors > 0) {
            writeln!(
                out,
                "  telemetry {}: {} dispatches ok, {} errors",
                device.device, device.successes, device.errors
            )?;
        }
        let verdict = if passed {
            format!("every device gave the one-device result (max rel diff <= {tolerance:.0e})")
        } else if mismatched.is_empty() {
            "the one-device run FAILED its checks".to_owned()
        } else {
            format!("FAILED: {} differ from the one-device result", mismatched.join(", "))
        };
        writeln!(out, "{verdict}")?;
    }
    if passed { Ok(()) } else { Err(CliError::Invalid(String::new())) }
}

/// The devices of `--devices`, in order.
#[derive(Clone, Debug)]
pub(crate) struct DeviceList(pub(crate) Vec<Device>);

/// Parses `--devices`: devices separated by commas (`cpu`, `cuda`, `cuda:N`).
pub(super) fn parse_devices(value: &str) -> Result<DeviceList, String> {
    value
        .split(',')
        .map(|d| d.trim().parse().map_err(|e: layerzero::types::TypesError| format!("{d}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(DeviceList)
}
