//! The kernel registry under concurrent reads and writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use layerzero::registry::KernelRegistry;
use layerzero::types::{KernelId, KernelSpec, OperationType, Platform};

const WRITES: usize = 2_000;
const READERS: usize = 8;

fn spec(i: usize) -> KernelSpec {
    let op = if i.is_multiple_of(2) { OperationType::NormRms } else { OperationType::Rope };
    KernelSpec::new(&format!("concurrent_kernel_{i}"), Platform::Cpu).unwrap().for_operation(op)
}

/// Eight threads read while one registers: every read sees a consistent snapshot (each
/// kernel listed under an operation is also found by id, counts only grow), and at the end
/// every registration is visible to everyone.
#[test]
fn eight_readers_while_one_registers() {
    let registry = Arc::new(KernelRegistry::new());
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(READERS + 1));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (registry, done, start) = (Arc::clone(&registry), Arc::clone(&done), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut last_len = 0;
                let mut reads = 0u64;
                loop {
                    // Read `done` before the snapshot: a snapshot taken after `done` was set
                    // must hold every kernel.
                    let finished = done.load(Ordering::Acquire);
                    let snapshot = registry.snapshot();
                    assert!(snapshot.len() >= last_len, "the registry shrank");
                    last_len = snapshot.len();
                    let norms = snapshot.by_operation(OperationType::NormRms.into());
                    let ropes = snapshot.by_operation(OperationType::Rope.into());
                    assert_eq!(norms.len() + ropes.len(), snapshot.len());
                    for spec in norms.iter().chain(ropes) {
                        assert_eq!(snapshot.get(spec.id).map(|s| s.id), Some(spec.id));
                    }
                    reads += 1;
                    if finished {
                        assert_eq!(snapshot.len(), WRITES);
                        return reads;
                    }
                }
            })
        })
        .collect();

    start.wait();
    for i in 0..WRITES {
        registry.register(spec(i)).unwrap();
    }
    done.store(true, Ordering::Release);

    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads >= READERS as u64);
    assert_eq!(registry.len(), WRITES);
    assert_eq!(registry.version(), WRITES as u64);
    for i in 0..WRITES {
        let id = KernelId::lookup(&format!("concurrent_kernel_{i}")).unwrap();
        assert!(registry.get(id).is_some());
    }
}

/// Several writers at once lose nothing, and a duplicate loses the race cleanly.
#[test]
fn concurrent_writers_lose_nothing() {
    let registry = Arc::new(KernelRegistry::new());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let registry = Arc::clone(&registry);
            thread::spawn(move || {
                (0..250).filter(|i| registry.register(spec(10_000 + (i * 4 + w) % 500)).is_ok()).count()
            })
        })
        .collect();
    let registered: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(registered, 500, "each of 500 distinct ids is registered exactly once");
    assert_eq!(registry.len(), 500);
}
