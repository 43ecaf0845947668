//! 3.6: the chart's default `resources.limits.memory` holds at the scale the chart documents,
//! measured on the node (`make bench-node`; not part of `make test`): N PhoneNumbers (10,000
//! unless `NODE_SCALE_N`), each with a SIP password Secret of its own, made Ready by the chart's
//! pod under its default limit; then the pod is deleted and its successor lists them all again
//! (a restart: the highest point of the operator's memory). The container's memory is read as
//! the kubelet and the kernel see it (the container's memory cgroup: its usage and highest usage)
//! and as the process sees it (`VmRSS`, `VmHWM`). The pod must never be OOM-killed; the
//! figures go to target/bench/node-scale.md for docs/benchmarks.md.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use oneinbox_operator::crd::PhoneNumber;
use serde_json::{Value, json};

use crate::harness::*;
use crate::probes::install;
use crate::*;

/// The container's memory, from its cgroup and its main process.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    /// cgroup `memory.current` and `memory.peak` (what the limit applies to), MiB.
    current: f64,
    peak: f64,
    /// `VmRSS` and `VmHWM` of the process, MiB.
    rss: f64,
    hwm: f64,
}

fn kib_field(status: &str, key: &str) -> f64 {
    status_field(status, key)
        .trim_end_matches(" kB")
        .parse::<f64>()
        .expect("a kB figure")
        / 1024.0
}

fn memory_of(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    // The memory controller's cgroup: v1 (this machine: "N:memory:/path") or v2 ("0::/path").
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let v1 = cgroup.lines().find_map(|l| {
        l.split_once(":memory:")
            .map(|(_, p)| format!("/sys/fs/cgroup/memory{p}"))
    });
    let (dir, current, peak) = match v1 {
        Some(dir) => (dir, "memory.usage_in_bytes", "memory.max_usage_in_bytes"),
        None => {
            let p = cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("a cgroup path");
            (
                format!("/sys/fs/cgroup{p}"),
                "memory.current",
                "memory.peak",
            )
        }
    };
    let read = |file: &str| {
        std::fs::read_to_string(format!("{dir}/{file}"))
            .unwrap_or_else(|e| panic!("{dir}/{file}: {e}"))
            .trim()
            .parse::<f64>()
            .map(|b| b / 1024.0 / 1024.0)
            .expect("bytes")
    };
    Memory {
        current: read(current),
        peak: read(peak),
        rss: kib_field(&status, "VmRSS"),
        hwm: kib_field(&status, "VmHWM"),
    }
}

/// The pod's one container: restarts, and whether it was ever OOM-killed.
fn restarts_and_oom(pod: &Pod) -> (i32, bool) {
    let cs = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .expect("a container status");
    let oom = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
        s.and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
    };
    (
        cs.restart_count,
        oom(cs.last_state.as_ref()) || oom(cs.state.as_ref()),
    )
}

/// `oneinbox_operator_objects{condition="Ready"}` from the pod's metrics.
async fn ready_objects(pod: &Pod) -> Option<usize> {
    let (_, text) = admin_get(pod, "/metrics").await?;
    text.lines()
        .find(|l| l.starts_with("oneinbox_operator_objects{") && l.contains("condition=\"Ready\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as usize)
}

async fn the_pod(client: &kube::Client, ns: &str, release: &str, not: Option<&str>) -> Pod {
    wait(
        "the operator pod Ready",
        Duration::from_secs(300),
        || async {
            pods_of(client, ns, release).await.into_iter().find(|p| {
                pod_ready(p)
                    && p.metadata.deletion_timestamp.is_none()
                    && p.metadata.name.as_deref() != not
            })
        },
    )
    .await
}

/// Until `done` holds, the container's highest memory seen (sampled each second) and `done`'s
/// value; fails after `timeout`.
async fn sample_until<T, F, Fut>(pid: u32, timeout: Duration, mut done: F) -> (Memory, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut top = Memory::default();
    loop {
        let m = memory_of(pid);
        top = Memory {
            current: top.current.max(m.current),
            peak: top.peak.max(m.peak),
            rss: top.rss.max(m.rss),
            hwm: top.hwm.max(m.hwm),
        };
        if let Some(v) = done().await {
            return (top, v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out; memory so far {top:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn limit_mib() -> f64 {
    let values = std::fs::read_to_string(repo().join("charts/oneinbox-operator/values.yaml"))
        .expect("values.yaml");
    let v: Value = yaml_serde::from_str(&values).expect("values.yaml is YAML");
    let limit = v["resources"]["limits"]["memory"]
        .as_str()
        .expect("resources.limits.memory");
    limit
        .strip_suffix("Mi")
        .and_then(|m| m.parse::<f64>().ok())
        .expect("a limit in Mi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark (make bench-node): N PhoneNumbers and Secrets on the node, tens of minutes"]
async fn the_default_memory_limit_holds_the_documented_scale() {
    let n: usize = std::env::var("NODE_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let node = node();
    let client = admin_client().await;
    let ns = prepare_namespace(&client, "scale", "pw-scale-unused").await;
    let mock = Mock::start_on(&format!("{}:0", node.ip), &["--api-key", API_KEY]);
    let release = format!("oi-{}", &ns[ns.len() - 6..]);
    let limit = limit_mib();
    // The chart's defaults (resources, leader election, probes), but a budget the mock allows:
    // at the default 20 requests per second the creates alone take over eight minutes.
    let values = values(
        node,
        &ns,
        &mock.url,
        json!({"logLevel": "info,kube=warn",
               "apiRateLimit": {"rps": 500, "burst": 500, "maxInFlight": 32}}),
    );
    install(&release, &ns, &values).await;
    let first = the_pod(&client, &ns, &release, None).await;
    let pid = container_pid(node, &first);
    let idle = memory_of(pid);
    println!(
        "scale: N={n}, limit {limit} MiB; idle pod {idle:?}; load {}",
        loadavg()
    );

    let names: Vec<String> = (0..n).map(|i| format!("s-{i:05}")).collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pns: Api<PhoneNumber> = Api::namespaced(client.clone(), &ns);
    let t0 = Instant::now();
    create_secrets(&secrets, &names).await;
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let pns = pns.clone();
            async move {
                let number = format!("+1{}", 2_000_000_000u64 + i as u64);
                let pn = json!({"apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                    "metadata": {"name": name}, "spec": sip_spec(&number, &format!("{name}-sip"))});
                pns.patch(
                    name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&pn),
                )
                .await
                .expect("apply PhoneNumber");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!(
        "  {n} Secrets and PhoneNumbers created in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let (to_ready, _) = sample_until(pid, Duration::from_secs(4 * 3600), || async {
        ready_objects(&first).await.filter(|r| *r >= n)
    })
    .await;
    let at_ready = memory_of(pid);
    let ready_secs = t0.elapsed().as_secs_f64();
    println!(
        "  all Ready after {ready_secs:.0} s; now {at_ready:?}; highest on the way {to_ready:?}; load {}",
        loadavg()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first_name = first.metadata.name.clone().unwrap();
    let (restarts, oom) = restarts_and_oom(&pods.get(&first_name).await.expect("the pod"));
    assert_eq!((restarts, oom), (0, false), "no restart and no OOM kill");

    // A restart: the successor lists every object and Secret, then waits out a minute.
    pods.delete(&first_name, &DeleteParams::default())
        .await
        .expect("delete the pod");
    let second = the_pod(&client, &ns, &release, Some(&first_name)).await;
    let pid2 = container_pid(node, &second);
    let t1 = Instant::now();
    let (after_restart, _) = sample_until(pid2, Duration::from_secs(600), || async {
        (t1.elapsed() >= Duration::from_secs(60)).then_some(())
    })
    .await;
    let second_name = second.metadata.name.clone().unwrap();
    let (restarts, oom) = restarts_and_oom(&pods.get(&second_name).await.expect("the pod"));
    println!(
        "  restart: highest in its first minute {after_restart:?}; restarts {restarts}, OOM killed {oom}; load {}",
        loadavg()
    );
    assert_eq!((restarts, oom), (0, false), "no restart and no OOM kill");
    let highest = to_ready.peak.max(after_restart.peak);
    assert!(
        highest < limit,
        "the container's cgroup peaked at {highest:.1} MiB, over the default limit {limit} MiB"
    );

    let report = format!(
        "| N | limit | created and Ready | cgroup at all Ready (current / peak) | VmRSS / VmHWM at all Ready | restart: cgroup peak, VmHWM in the first minute | OOM kills | load |\n|---|---|---|---|---|---|---|---|\n| {n} | {limit} MiB | {ready_secs:.0} s | {:.1} / {:.1} MiB | {:.1} / {:.1} MiB | {:.1} MiB, {:.1} MiB | 0 | {} |\n",
        at_ready.current,
        to_ready.peak.max(at_ready.peak),
        at_ready.rss,
        at_ready.hwm,
        after_restart.peak,
        after_restart.hwm,
        loadavg()
    );
    let dir = repo().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("node-scale.md"), &report).expect("write the report");
    println!("{report}");

    // Clean up without N deregistrations: the operator goes first, then the finalizers.
    uninstall(&release, &ns);
    futures::stream::iter(names.iter())
        .map(|name| {
            let pns = pns.clone();
            async move {
                let _ = pns
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let _ = pns
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
}
