//! What the operator keeps per watched object beside its cache entry, counted by a
//! heap-profiling allocator for Ready objects as a restart leaves them: this process's memory
//! of the object (`controller::memory`), the claims index, and the Secret version of the
//! metadata-only watch. Counts, not timings (docs/benchmarks.md, "Memory at scale").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::runtime::{reflector, watcher};
use oneinbox_operator::controller::claims::Claims;
use oneinbox_operator::controller::memory::{Checked, Memory};
use oneinbox_operator::controller::plan::PatchableDigest;
use oneinbox_operator::crd::{CachedPhoneNumber, PhoneNumber};
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const N: usize = 2_000;

fn uid(i: usize) -> String {
    format!("5f0c6a0e-8d1e-4a7b-9a55-{:012}", i)
}

fn ready(i: usize) -> PhoneNumber {
    let name = format!("s-{i:06}");
    serde_json::from_value(json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": name, "namespace": "bench-scale-3f9a1c", "uid": uid(i),
                     "resourceVersion": format!("{}", 100000 + i * 3), "generation": 1,
                     "creationTimestamp": "2026-12-02T10:00:00Z",
                     "finalizers": ["oneinbox.ai/finalizer"]},
        "spec": {"phoneNumber": format!("+1{}", 2_000_000_000u64 + i as u64), "provider": "twilio",
                 "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                 "providerConfig": {"trunkAddress": "t.example.com", "authUsername": "u",
                                    "authPasswordSecretRef": {"name": format!("{name}-sip")}}},
        "status": {"observedGeneration": 1, "phoneNumberId": uid(i + 1_000_000),
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Available",
                                   "message": "m", "lastTransitionTime": "2026-12-02T10:00:00Z"}]}
    }))
    .unwrap()
}

/// Bytes and blocks per object that `f` leaves allocated.
fn per_object(f: impl FnOnce()) -> (isize, isize) {
    let h0 = dhat::HeapStats::get();
    f();
    let h1 = dhat::HeapStats::get();
    let n = N as isize;
    (
        (h1.curr_bytes as isize - h0.curr_bytes as isize) / n,
        (h1.curr_blocks as isize - h0.curr_blocks as isize) / n,
    )
}

#[test]
fn what_each_object_costs_beside_its_cache_entry() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let objs: Vec<PhoneNumber> = (0..N).map(ready).collect();
    let (store, mut writer) = reflector::store::<CachedPhoneNumber>();
    let cache = per_object(|| {
        for o in &objs {
            let mut o = o.clone();
            oneinbox_operator::crd::slim_for_cache(&mut o);
            let packed = CachedPhoneNumber::pack(&o).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(packed));
        }
    });
    let claims = Claims::new(None);
    let index = per_object(|| {
        claims.observe(&watcher::Event::InitDone, &store);
    });
    let mut memory = Memory::default();
    let now = Instant::now();
    let remembered = per_object(|| {
        for (i, o) in objs.iter().enumerate() {
            memory.update(o.metadata.uid.as_deref().unwrap(), |m| {
                m.check = Some(Checked {
                    generation: Some(1),
                    id: uid(i + 1_000_000),
                    at: now,
                    interval: Some(Duration::from_secs(600)),
                    remote: PatchableDigest::unread(),
                    secrets: 7,
                    dispatched: false,
                });
                m.written = Some(100_000 + i as u64 * 3);
            });
        }
    });
    let mut versions: HashMap<(String, String), String> = HashMap::new();
    let secrets = per_object(|| {
        for i in 0..N {
            versions.insert(
                ("bench-scale-3f9a1c".into(), format!("s-{i:06}-sip")),
                format!("{}", 50000 + i),
            );
        }
    });
    eprintln!(
        "per object: cache {cache:?}, claims index {index:?}, memory {remembered:?}, \
         Secret version {secrets:?} (bytes, blocks)"
    );
    assert_eq!(memory.len(), N);
    // On 2026-12-08 at 2,000 objects: memory 643 B while its table held the records inline
    // (a hash table keeps up to twice as many slots as entries), 399 B boxed; the claims
    // index 199 B while a bucket's first push reserved four entries, 151 B with one.
    assert!(remembered.0 < 450, "{remembered:?}");
    assert!(index.0 < 170, "{index:?}");
}
