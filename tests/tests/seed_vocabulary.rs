//! The seeds' vocabulary, as a user of the `layerzero` facade meets it.

use layerzero::selection::SelectionContext;
use layerzero::types::{DType, Device, Operation, OperationType, Platform, TypesError, get_operation_type};
use proptest::prelude::*;

/// Every operation string the seeds use, with the enum variant seed 001 names.
const SEED_OPERATIONS: [(&str, OperationType); 11] = [
    ("attention.causal", OperationType::AttentionCausal),
    ("attention.full", OperationType::AttentionFull),
    ("attention.cross", OperationType::AttentionCross),
    ("attention.sliding_window", OperationType::AttentionSlidingWindow),
    ("attention.decode", OperationType::AttentionDecode),
    ("attention.prefill", OperationType::AttentionPrefill),
    ("rms_norm", OperationType::NormRms),
    ("layer_norm", OperationType::NormLayer),
    ("rope", OperationType::Rope),
    ("swiglu", OperationType::Swiglu),
    ("matmul", OperationType::Matmul),
];

#[test]
fn seed_operation_strings_round_trip() {
    for (name, op) in SEED_OPERATIONS {
        assert_eq!(get_operation_type(name).unwrap(), op);
        assert_eq!(op.to_string(), name);
        assert_eq!(name.parse::<Operation>().unwrap().to_string(), name);
    }
}

#[test]
fn seed_dtypes_parse_and_fp16_is_refused_with_the_seed_text() {
    for name in
        ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64", "float8_e4m3fn", "float8_e5m2"]
    {
        assert_eq!(name.parse::<DType>().unwrap().to_string(), name);
    }
    let err = "fp16".parse::<DType>().unwrap_err();
    assert!(matches!(err, TypesError::InvalidDType { .. }));
    assert_eq!(err.to_string(), "Invalid dtype (fp16)");
}

/// Seed 003's "Dispatch with Explicit Context" example, field for field.
#[test]
fn seed_explicit_context_example() {
    let ctx = SelectionContext::builder()
        .batch_size(8)
        .seq_len(2048)
        .seq_len_q(2048)
        .seq_len_k(2048)
        .head_dim(128)
        .num_heads(32)
        .num_kv_heads(32)
        .dtype("float16".parse().unwrap())
        .device("cuda:0".parse().unwrap())
        .platform("cuda".parse().unwrap())
        .is_causal(true)
        .enable_gqa(false)
        .dropout_p(0.0)
        .build()
        .unwrap();
    assert_eq!(ctx.device, Some(Device::Cuda(0)));
    assert_eq!(ctx.platform, Some(Platform::Cuda));
    assert!(!ctx.uses_gqa());
    assert_eq!(ctx.tp_size, None, "fields the example does not give stay absent");
}

proptest! {
    /// Any string either parses to an operation that prints back as the same string, or
    /// fails with a typed error; nothing panics.
    #[test]
    fn operation_parsing_is_total(name in "[a-z_.]{0,24}|\\PC{0,12}") {
        match Operation::parse(&name) {
            Ok(op) => prop_assert_eq!(op.to_string(), name),
            Err(TypesError::UnknownOperation { .. } | TypesError::InvalidName { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// Device strings round-trip, and anything else is a typed error.
    #[test]
    fn device_parsing_is_total(text in "cpu|cuda(:[0-9]{1,6})?|\\PC{0,10}") {
        match text.parse::<Device>() {
            Ok(device) if text == "cuda" => prop_assert_eq!(device, Device::Cuda(0)),
            Ok(device) => prop_assert_eq!(device.to_string().parse::<Device>().unwrap(), device),
            Err(e) => prop_assert!(matches!(e, TypesError::InvalidDevice { .. }), "unexpected error {e:?}"),
        }
    }
}
