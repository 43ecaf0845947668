//! What the PhoneNumber cache holds per object, counted by a heap-profiling allocator: the
//! packed form (`crd::cached`) against the decoded `PhoneNumber` it replaced, for Ready
//! objects as the footprint benchmark makes them. Counts, not timings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use kube::runtime::{reflector, watcher};
use oneinbox_operator::crd::CachedPhoneNumber;
use oneinbox_operator::crd::WirePhoneNumber;
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn ready(i: usize) -> serde_json::Value {
    let name = format!("f-{i:05}");
    json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {
            "name": name, "namespace": "bench-footprint", "uid": uuid::Uuid::new_v4().to_string(),
            "resourceVersion": format!("{}", 100000 + i * 3), "generation": 1,
            "creationTimestamp": "2026-12-02T10:00:00Z",
            "finalizers": ["oneinbox.ai/deregister"],
            "annotations": {"oneinbox.ai/phone-number-id": uuid::Uuid::new_v4().to_string()},
            "managedFields": [{"manager": "bench", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
        },
        "spec": {
            "phoneNumber": format!("+1{}", 2_000_000_000u64 + i as u64),
            "provider": "twilio",
            "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
            "friendlyName": "Sales line",
            "providerConfig": {
                "trunkAddress": "example.pstn.twilio.com",
                "authUsername": "oneinbox",
                "authPasswordSecretRef": {"name": format!("{name}-sip")}
            },
            "inboundRouting": {"fallback": {"agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"}, "voicemailMessage": "Sorry, we missed your call."}
        },
        "status": {
            "observedGeneration": 1,
            "phoneNumberId": uuid::Uuid::new_v4().to_string(),
            "state": "active",
            "inboundTrunkId": format!("ST_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            "outboundTrunkId": format!("ST_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            "dispatchRuleId": format!("SDR_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            "createdAt": format!("2026-12-02T10:{:02}:{:02}.{:06}Z", i / 600 % 60, i / 10 % 60, i * 7919 % 1_000_000),
            "updatedAt": format!("2026-12-02T10:{:02}:{:02}.{:06}Z", i / 600 % 60, i / 10 % 60, i * 7919 % 1_000_000),
            "credentialsHash": format!("hmac-sha256:0a1b2c3d:{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            "settledAttempt": uuid::Uuid::new_v4().to_string(),
            "secretVersions": {format!("{name}-sip"): format!("{}", 50000 + i)},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Available",
                "message": "The number is registered with OneInbox, active, and matches the spec",
                "lastTransitionTime": format!("2026-12-02T10:{:02}:{:02}Z", i / 600 % 60, i / 10 % 60), "observedGeneration": 1}]
        }
    })
}

fn measure<K, F>(objs: &[String], decode: F) -> (isize, isize)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(&str) -> K,
{
    let (store, mut writer) = reflector::store::<K>();
    let h0 = dhat::HeapStats::get();
    for s in objs {
        writer.apply_watcher_event(&watcher::Event::Apply(decode(s)));
    }
    let h1 = dhat::HeapStats::get();
    assert_eq!(store.state().len(), objs.len());
    let n = objs.len() as isize;
    (
        (h1.curr_bytes as isize - h0.curr_bytes as isize) / n,
        (h1.curr_blocks as isize - h0.curr_blocks as isize) / n,
    )
}

#[test]
fn a_cached_ready_object_takes_under_half_the_heap_of_a_decoded_one() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let objs: Vec<String> = (0..2_000).map(|i| ready(i).to_string()).collect();
    let decoded = measure(&objs, |s| {
        let mut pn = serde_json::from_str::<WirePhoneNumber>(s).unwrap().0;
        oneinbox_operator::crd::slim_for_cache(&mut pn);
        pn
    });
    let packed = measure(&objs, |s| {
        serde_json::from_str::<CachedPhoneNumber>(s).unwrap()
    });
    eprintln!(
        "per object in the cache (its key included): PhoneNumber {} B in {} blocks; \
         CachedPhoneNumber {} B in {} blocks",
        decoded.0, decoded.1, packed.0, packed.1
    );
    // On 2026-12-07: 1,258 B in 9 blocks against about 2.6 KiB in 39. The blocks: kube's store
    // key and the Arc, the meta's strings (its resourceVersion included: the watcher resumes
    // from it, and without it the watch relisted on every event), the facts, the packed JSON.
    assert!(packed.0 * 2 < decoded.0, "{packed:?} against {decoded:?}");
    assert!(packed.0 < 1_400, "{packed:?}");
    assert!(packed.1 <= 9, "{packed:?}");
}
