//! The layer's parameters and inputs: seeded random ones, or read from safetensors files
//! with the Llama names; and the output file.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};

use crate::error::CliError;

/// The sizes of the decoder stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Shapes {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) intermediate: usize,
    pub(crate) layers: usize,
    pub(crate) seq: usize,
    pub(crate) decode_steps: usize,
}

impl Shapes {
    pub(crate) fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Checks the sizes agree: heads divide hidden into an even head_dim, kv_heads divide
    /// heads, nothing is zero.
    pub(crate) fn validate(&self) -> Result<(), CliError> {
        let bad = |m: String| Err(CliError::invalid(m));
        if self.hidden == 0 || self.heads == 0 || self.kv_heads == 0 || self.layers == 0 || self.seq == 0 {
            return bad("--hidden, --heads, --kv-heads, --layers and --seq must all be at least 1".into());
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "--heads {} must divide --hidden {} into an even head_dim (rope rotates pairs)",
                self.heads, self.hidden
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!("--kv-heads {} must divide --heads {}", self.kv_heads, self.heads));
        }
        if self.intermediate == 0 {
            return bad("the intermediate size must be at least 1".into());
        }
        Ok(())
    }
}

/// One decoder layer's parameters, as float32, each `[out, in]` like PyTorch's Linear.
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights {
    pub(crate) input_layernorm: Vec<f32>,
    pub(crate) q_proj: Vec<f32>,
    pub(crate) k_proj: Vec<f32>,
    pub(crate) v_proj: Vec<f32>,
    pub(crate) o_proj: Vec<f32>,
    pub(crate) post_attention_layernorm: Vec<f32>,
    pub(crate) gate_proj: Vec<f32>,
    pub(crate) up_proj: Vec<f32>,
    pub(crate) down_proj: Vec<f32>,
}

/// The Llama names of a layer's parameters, with the shape each must have.
pub(crate) fn parameter_names(shapes: &Shapes) -> [(&'static str, [usize; 2]); 9] {
    let (h, q, kv, i) = (shapes.hidden, shapes.q_dim(), shapes.kv_dim(), shapes.intermediate);
    [
        ("input_layernorm.weight", [h, 0]),
        ("self_attn.q_proj.weight", [q, h]),
        ("self_attn.k_proj.weight", [kv, h]),
        ("self_attn.v_proj.weight", [kv, h]),
        ("self_attn.o_proj.weight", [h, q]),
        ("post_attention_layernorm.weight", [h, 0]),
        ("mlp.gate_proj.weight", [i, h]),
        ("mlp.up_proj.weight", [i, h]),
        ("mlp.down_proj.weight", [h, i]),
    ]
}

impl LayerWeights {
    fn from_parameters(mut p: Vec<Vec<f32>>) -> LayerWeights {
        // Nine parameters, in `parameter_names` order (both callers build exactly nine).
        let mut next = || if p.is_empty() { Vec::new() } else { p.remove(0) };
        LayerWeights {
            input_layernorm: next(),
            q_proj: next(),
            k_proj: next(),
            v_proj: next(),
            o_proj: next(),
            post_attention_layernorm: next(),
            gate_proj: next(),
            up_proj: next(),
            down_proj: next(),
        }
    }

    /// Random parameters: projections uniform with variance `1 / fan_in` (so activations
    /// keep their scale through the layer), norm weights near 1.
    pub(crate) fn random(shapes: &Shapes, rng: &mut SmallRng) -> LayerWeights {
        let parameters = parameter_names(shapes)
            .iter()
            .map(|(_, [rows, cols])| {
                if *cols == 0 {
                    (0..*rows).map(|_| 1.0 + rng.random_range(-0.1f32..0.1)).collect()
                } else {
                    let bound = (3.0 / *cols as f32).sqrt();
                    (0..rows * cols).map(|_| rng.random_range(-bound..bound)).collect()
                }
            })
            .collect();
        LayerWeights::from_parameters(parameters)
    }
}

/// Uniform values in `[-1, 1)`: the random input rows.
pub(crate) fn random_rows(rows: usize, hidden: usize, rng: &mut SmallRng) -> Vec<f32> {
    (0..rows * hidden).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub(crate) fn seeded(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// A safetensors file's tensors, as float32 with their shapes.
pub(crate) struct TensorFile {
    path: String,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TensorFile {
    pub(crate) fn read(path: &Path) -> Result<TensorFile, CliError> {
        let bytes = std::fs::read(path).map_err(|e| CliError::io(path, e))?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| CliError::invalid(format!("{}: not a safetensors file: {e}", path.display())))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                other => {
                    return Err(CliError::invalid(format!(
                        "{}: tensor `{name}` is {other:?}; float32, float16 and bfloat16 are read",
                        path.display()
                    )));
                }
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(TensorFile { path: path.display().to_string(), tensors })
    }

    /// The tensor `name`, or exit code 1 naming what the file has.
    pub(crate) fn get(&self, name: &str) -> Result<&(Vec<usize>, Vec<f32>), CliError> {
        self.tensors.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = self.tensors.keys().map(String::as_str).take(12).collect();
            if self.tensors.len() > known.len() {
                known.push("...");
            }
            CliError::invalid(format!("{}: no tensor `{name}` (the file has: {})", self.path, known.join(", ")))
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// How many layers the file holds: `model.layers.{i}.` prefixes, or one unprefixed layer.
    pub(crate) fn layer_count(&self) -> usize {
        let prefixed = (0..).take_while(|i| self.has(&format!("model.layers.{i}.input_layernorm.weight"))).count();
        if prefixed > 0 { prefixed } else { usize::from(self.has("input_layernorm.weight")) }
    }

    /// The parameters of layer `layer`, each checked against the shape `shapes` asks for.
    pub(crate) fn layer(&self, shapes: &Shapes, layer: usize, prefixed: bool) -> Result<LayerWeights, CliError> {
        let mut parameters = Vec::new();
        for (name, [rows, cols]) in parameter_names(shapes) {
            let full = if prefixed { format!("model.layers.{layer}.{name}") } else { name.to_owned() };
            let (shape, values) = self.get(&full)?;
            let expected: Vec<usize> = if cols == 0 { vec![rows] } else { vec![rows, cols] };
            if *shape != expected {
                return Err(CliError::invalid(format!(
                    "{}: `{full}` has shape {shape:?}, the layer needs {expected:?} (hidden {}, heads {}, kv heads {}, intermediate {})",
                    self.path, shapes.hidden, shapes.heads, shapes.kv_heads, shapes.intermediate
                )));
            }
            parameters.push(values.clone());
        }
        Ok(LayerWeights::from_parameters(parameters))
    }
}

/// Writes float32 tensors to a safetensors file.
pub(crate) fn write_tensors(path: &Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<(), CliError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            ((*name).to_owned(), shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let serialized =
        safetensors::serialize(views, None).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    std::fs::write(path, serialized).map_err(|e| CliError::io(path, e))
}
