//! A process-wide, append-only string interner.
//!
//! Kernel ids and custom operation names are parsed once (at registration or config load)
//! and compared as `u32` afterwards. Interned strings live for the rest of the process: the
//! table only grows by the number of *distinct* names, which is bounded by what a program
//! registers and configures, not by how often it dispatches.

use std::sync::{OnceLock, RwLock};

use rustc_hash::FxHashMap;

/// One table of names. Each kind of name (kernel ids, custom operations) has its own.
pub(crate) struct Interner {
    table: OnceLock<RwLock<Table>>,
}

#[derive(Default)]
struct Table {
    index: FxHashMap<&'static str, u32>,
    names: Vec<&'static str>,
}

impl Interner {
    pub(crate) const fn new() -> Self {
        Interner { table: OnceLock::new() }
    }

    fn table(&self) -> &RwLock<Table> {
        self.table.get_or_init(|| RwLock::new(Table::default()))
    }

    /// The index of `name`, adding it if it is new. `None` only if the table holds
    /// `u32::MAX` names already.
    pub(crate) fn intern(&self, name: &str) -> Option<u32> {
        if let Some(index) = self.lookup(name) {
            return Some(index);
        }
        // A poisoned lock means a panic while inserting; the table itself is still
        // consistent (insertion is a push followed by a map insert), so keep using it.
        let mut table = self.table().write().unwrap_or_else(|e| e.into_inner());
        if let Some(&index) = table.index.get(name) {
            return Some(index);
        }
        let index = u32::try_from(table.names.len()).ok()?;
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        table.names.push(leaked);
        table.index.insert(leaked, index);
        Some(index)
    }

    /// The index of `name` if it was interned before; never adds.
    pub(crate) fn lookup(&self, name: &str) -> Option<u32> {
        let table = self.table().read().unwrap_or_else(|e| e.into_inner());
        table.index.get(name).copied()
    }

    /// The name behind `index`. Indices only come from `intern`, so a miss is a bug
    /// in this module; the empty string is returned rather than panicking.
    pub(crate) fn resolve(&self, index: u32) -> &'static str {
        let table = self.table().read().unwrap_or_else(|e| e.into_inner());
        table.names.get(index as usize).copied().unwrap_or("")
    }
}

/// The known name closest to `input` by edit distance, if it is close enough to be a
/// plausible typo: at most a third of the name's length in edits, and never fewer than two.
pub fn nearest_name<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = (input.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(input, candidate), candidate))
        .filter(|&(distance, _)| distance <= budget)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_idempotent_and_resolvable() {
        static TABLE: Interner = Interner::new();
        let a = TABLE.intern("alpha").unwrap();
        let b = TABLE.intern("beta").unwrap();
        assert_ne!(a, b);
        assert_eq!(TABLE.intern("alpha"), Some(a));
        assert_eq!(TABLE.resolve(b), "beta");
        assert_eq!(TABLE.lookup("gamma"), None);
    }

    #[test]
    fn nearest_name_finds_typos_only() {
        let names = ["attention.causal", "attention.cross", "rms_norm"];
        assert_eq!(nearest_name("attention.casual", names), Some("attention.causal"));
        assert_eq!(nearest_name("rmsnorm", names), Some("rms_norm"));
        assert_eq!(nearest_name("matmul", names), None);
    }
}
