//! The YAML schema v1.0 as serde types: what a rules file says, before compilation.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The only schema version this crate reads.
pub const SCHEMA_VERSION: &str = "1.0";

/// A rules file (seed 000's "YAML Configuration Schema"), as written.
///
/// Deserialise it with any serde format, or better load it with
/// [`ConfigSchema::load`](crate::ConfigSchema::load), which reports every problem with
/// its line and column and compiles the rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelsConfig {
    /// Schema version: must be `"1.0"`.
    #[serde(default)]
    pub version: String,
    /// Fallback kernel and default rule priority.
    #[serde(default)]
    pub defaults: Defaults,
    /// Rules, in file order (evaluated by priority, highest first; ties in file order).
    #[serde(default)]
    pub dispatch_rules: Vec<DispatchRule>,
    /// Operation name or glob → kernel forced for it.
    #[serde(default)]
    pub kernel_locks: OrderedMap<String>,
    /// If not empty, only kernels matching one of these globs may be chosen.
    #[serde(default)]
    pub kernel_allows: Vec<String>,
    /// Kernels matching one of these globs are never chosen.
    #[serde(default)]
    pub kernel_denies: Vec<String>,
    /// Operation name or glob → kernels to fall back to, in order.
    #[serde(default)]
    pub fallback_chains: OrderedMap<Vec<String>>,
}

/// The `defaults` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The kernel to fall back to after an operation's chain.
    #[serde(default)]
    pub fallback_policy: Option<String>,
    /// The priority of a rule that does not give one (0 to 1000; default 50).
    #[serde(default = "default_priority")]
    pub default_priority: u32,
}

fn default_priority() -> u32 {
    50
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { fallback_policy: None, default_priority: default_priority() }
    }
}

/// One entry of `dispatch_rules`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRule {
    /// Operation name or glob (`attention.*`).
    #[serde(default)]
    pub operation: String,
    /// Conditions on the context, all of which must hold: `field` or `field_op` → value.
    #[serde(default)]
    pub conditions: OrderedMap<ConditionValue>,
    /// The kernel the rule chooses.
    #[serde(default)]
    pub kernel: String,
    /// 0 to 1000; `defaults.default_priority` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

/// A condition's value as written: typed against its field when the rules compile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConditionValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A string (a quoted number is a string: `"8"`).
    Str(String),
    /// A list (for `_in`, `_not_in`, or a bare field: list means IN).
    List(Vec<ConditionValue>),
}

impl fmt::Display for ConditionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionValue::Bool(v) => write!(f, "{v}"),
            ConditionValue::Int(v) => write!(f, "{v}"),
            ConditionValue::Float(v) => write!(f, "{v:?}"),
            ConditionValue::Str(v) => f.write_str(v),
            ConditionValue::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A map that keeps its entries in file order (locks and chains are tried in that order).
#[derive(Clone, Debug, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    /// The entries, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value for `key` (the first, if written twice).
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = access.next_entry::<String, V>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}
