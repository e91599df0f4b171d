//! The process-wide dispatcher made lazily by the first `dispatch`: the global registries,
//! the built-in CPU kernels registered into an empty kernel registry, and the defaults.
//! (A test binary of its own: nothing else in the process may install a dispatcher first.)

use layerzero::config::DispatchMode;
use layerzero::dispatch::{DispatchError, DispatchOrchestrator, dispatch, get_global_dispatcher, init_global};
use layerzero::registry::get_global_kernel_registry;
use layerzero::types::{DType, NormArgs, OpArgs, OperationType, Tensor};

#[test]
fn the_first_dispatch_makes_a_default_dispatcher_with_the_cpu_kernels() {
    assert!(get_global_kernel_registry().snapshot().iter().next().is_none(), "nothing registered yet");
    let input = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 0.0], &[2, 4], DType::F32).unwrap();
    let weight = Tensor::from_f32(&[1.0, 1.0, 2.0, 2.0], &[4], DType::F32).unwrap();
    let mut out = Tensor::zeros(&[2, 4], DType::F32).unwrap();
    let mut args = OpArgs::Norm(NormArgs::new(input.view(), weight.view(), out.view_mut(), 1e-6));
    let result = dispatch(OperationType::NormRms, &mut args, None).unwrap();
    assert!(!result.was_fallback);
    let kernel = get_global_kernel_registry().get(result.kernel_id).unwrap();
    assert!(kernel.operations.contains(&OperationType::NormRms.into()));

    // rms_norm by hand: x / sqrt(mean(x²) + eps) * weight.
    let expected: Vec<f32> = [[1.0f32, 2.0, 3.0, 4.0], [-1.0, 0.0, 1.0, 0.0]]
        .iter()
        .flat_map(|row| {
            let rms = (row.iter().map(|x| x * x).sum::<f32>() / 4.0 + 1e-6).sqrt();
            row.iter().zip([1.0f32, 1.0, 2.0, 2.0]).map(move |(x, w)| x / rms * w)
        })
        .collect();
    let got = out.as_slice::<f32>().unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0), "{got:?} vs {expected:?}");
    }

    let global = get_global_dispatcher();
    let expected_mode = layerzero::config::DispatchConfig::from_env().map_or(DispatchMode::Dynamic, |c| c.mode());
    assert_eq!(global.default_mode(), expected_mode, "the config's mode (DYNAMIC when LAYERZERO_* is unset)");
    assert_eq!(global.get_telemetry().total.dispatch_count, 1);
    let late = DispatchOrchestrator::new(&Default::default(), DispatchMode::Static).unwrap();
    assert!(matches!(init_global(late), Err(DispatchError::GlobalAlreadyInitialized)));
}
