//! Chaos soak: many PhoneNumbers under random churn while the mock injects faults and the
//! operator is SIGKILLed, then heal, converge and check invariants that hold exactly.
//!
//! `run` is the reusable harness (`make chaos` runs it large, through `tests/soak/main.rs`);
//! the `#[tokio::test]` below is the small smoke version that gates `make test`. Nothing here
//! asserts on timing: the convergence wait is a liveness bound, and the time is only printed.
//!
//! Every loop is bounded in count and in time; all traffic goes to 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use oneinbox_operator::controller::credentials::{Credentials, HashKey, credentials_hash};
use oneinbox_operator::crd::{FINALIZER, PhoneNumber};
use oneinbox_operator::oneinbox::SecretString;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::harness::*;

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    /// Population the churn keeps around (created at the start).
    pub objects: usize,
    /// How long the churn lasts (ops, faults and kills all stop then).
    pub churn: Duration,
    /// Upper bound on churn operations, whatever the duration.
    pub max_ops: usize,
    /// Random pause between two operations, in milliseconds.
    pub op_gap_ms: (u64, u64),
    /// SIGKILLs of the operator (of the leader in HA mode), at random moments of the churn.
    pub kills: usize,
    /// Two replicas with leader election instead of one operator.
    pub ha: bool,
    /// Inject API faults during the churn.
    pub faults: bool,
    /// Also re-create numbers whose object was just deleted (deletionPolicy Delete).
    pub reuse_numbers: bool,
    /// Liveness bound on the wait for convergence after healing.
    pub converge_timeout: Duration,
    /// Operator drift-check interval (and its floor), so GETs run under faults too.
    pub poll_interval: &'static str,
    /// A second namespace whose newcomers claim the numbers and ids of the first one's objects
    /// (the operator then watches every namespace, selecting the run's objects by label).
    pub cross_namespace: bool,
    /// HA only: times the leader is cut off the API server (its proxy stopped) for 3 lease
    /// durations, then reconnected.
    pub partitions: usize,
    /// A kube-apiserver restart and an etcd outage (SIGSTOP) during the churn. Only where the
    /// run has the control plane to itself (`make chaos`), never in `make test`.
    pub plane_faults: bool,
    /// How long the etcd outage lasts.
    pub etcd_outage: Duration,
}

impl Params {
    /// The `make test` smoke: a dozen objects, ~30 s of churn, one kill.
    pub fn smoke(seed: u64) -> Params {
        Params {
            seed,
            objects: 12,
            churn: Duration::from_secs(30),
            max_ops: 400,
            op_gap_ms: (100, 350),
            kills: 1,
            ha: false,
            faults: true,
            reuse_numbers: true,
            converge_timeout: Duration::from_secs(60),
            poll_interval: "10s",
            cross_namespace: true,
            partitions: 0,
            plane_faults: false,
            etcd_outage: Duration::from_secs(30),
        }
    }
}

/// One invariant's outcome.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Everything the run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub summary: String,
    pub ops: BTreeMap<&'static str, u64>,
    pub op_errors: Vec<String>,
    pub faults: BTreeMap<String, u64>,
    pub kills: u64,
    /// Leader partitions, kube-apiserver restarts and etcd outages, with how long each took.
    pub plane_events: Vec<String>,
    /// Cross-namespace claimants that were not refused as they must be.
    pub cross_namespace_faults: Vec<String>,
    /// Cross-namespace claimants deleted before the operator had reached them (not Stalled
    /// within 15 s; e.g. behind the initial queue after a restart).
    pub cross_namespace_unseen: u64,
    pub churn_took: Duration,
    /// From healing until every convergence condition held; `None` if never.
    pub converged_after: Option<Duration>,
    /// `/_mock/calls`: every request received, by endpoint.
    pub calls: BTreeMap<String, u64>,
    /// `/_mock/calls/log`: (endpoint, outcome) → count (the log keeps the latest 10,000).
    pub outcomes: BTreeMap<(String, String), u64>,
    pub log_complete: bool,
    /// Committed writes by endpoint.
    pub accepted: BTreeMap<String, u64>,
    /// Events of the namespace by reason.
    pub events: BTreeMap<String, u64>,
    /// Notes of the `DriftCorrected` and `RegistrationLost` Events: nothing in the soak changes
    /// a registration outside the cluster, so each one needs an explanation.
    pub notable_events: Vec<String>,
    /// Every operator log line of the run (not rendered; the soak command writes it to a file).
    pub operator_logs: String,
    pub live_objects: usize,
    pub registrations: usize,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok) && self.converged_after.is_some()
    }

    pub fn failures(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if self.converged_after.is_none() {
            f.push("did not converge within the bound".into());
        }
        f
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "=== chaos soak, seed {} ===", self.seed);
        let _ = writeln!(s, "{}", self.summary);
        let _ = writeln!(s, "churn: {:.1} s", self.churn_took.as_secs_f64());
        let _ = writeln!(s, "operations: {} total", self.ops.values().sum::<u64>());
        for (k, v) in &self.ops {
            let _ = writeln!(s, "  {k:<22} {v}");
        }
        if !self.op_errors.is_empty() {
            let _ = writeln!(
                s,
                "operation errors (admin client): {}",
                self.op_errors.len()
            );
            for e in self.op_errors.iter().take(10) {
                let _ = writeln!(s, "  {e}");
            }
        }
        let _ = writeln!(
            s,
            "faults injected: {} total",
            self.faults.values().sum::<u64>()
        );
        for (k, v) in &self.faults {
            let _ = writeln!(s, "  {k:<40} {v}");
        }
        let _ = writeln!(s, "operator kills (SIGKILL): {}", self.kills);
        for e in &self.plane_events {
            let _ = writeln!(s, "  {e}");
        }
        let _ = writeln!(s, "OneInbox requests by endpoint (all received):");
        for (k, v) in &self.calls {
            let _ = writeln!(s, "  {k:<40} {v}");
        }
        let _ = writeln!(
            s,
            "OneInbox outcomes by endpoint{}:",
            if self.log_complete {
                ""
            } else {
                " (latest 10,000 only)"
            }
        );
        for ((e, o), v) in &self.outcomes {
            let _ = writeln!(s, "  {e:<40} {o:<16} {v}");
        }
        let _ = writeln!(s, "committed writes (accepted): {:?}", self.accepted);
        let _ = writeln!(s, "events by reason: {:?}", self.events);
        for note in &self.notable_events {
            let _ = writeln!(s, "  {note}");
        }
        let _ = writeln!(
            s,
            "end state: {} live objects, {} registrations",
            self.live_objects, self.registrations
        );
        match self.converged_after {
            Some(d) => {
                let _ = writeln!(s, "converged {:.1} s after healing", d.as_secs_f64());
            }
            None => {
                let _ = writeln!(s, "DID NOT CONVERGE");
            }
        }
        let _ = writeln!(s, "invariants:");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {:<28} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        s
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Delete,
    Orphan,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Delete => "Delete",
            Policy::Orphan => "Orphan",
        }
    }
}

/// What the test did to one object (the model the invariants are checked against).
#[derive(Clone, Debug)]
struct Obj {
    name: String,
    number: String,
    /// Name of its password Secret (SIP credentials), or `None` for `credentialId`.
    secret: Option<String>,
    password: String,
    replace: bool,
    policy: Policy,
    paused: bool,
    agent: &'static str,
    friendly: String,
    voicemail: Option<String>,
    rotations: u32,
    deleted: Option<Deleted>,
    /// The registration id it was created to adopt (kept in every apply, as a GitOps
    /// repository keeps the annotation).
    adopts: Option<String>,
}

#[derive(Clone, Debug)]
struct Deleted {
    policy: Policy,
    /// status.phoneNumberId when the delete was issued.
    id_at_delete: Option<String>,
}

/// The label of the run's PhoneNumbers (the operator selects them by it).
const RUN_LABEL: &str = "oneinbox.ai/chaos-run";

const CTD_POST: &str = "commit_then_delay POST past the client timeout";

const OPS: [&str; 11] = [
    "create",
    "create_reusing_number",
    "update_agent_routing",
    "rotate_password",
    "delete_Delete",
    "delete_Orphan",
    "pause",
    "resume",
    "adopt",
    "claim_another_id",
    "claim_across_namespaces",
];

struct Chaos<'a> {
    w: &'a World,
    /// The second namespace (cross-namespace claims), if any.
    other: Option<Api<PhoneNumber>>,
    rng: StdRng,
    objs: Vec<Obj>,
    numbers: HashSet<String>,
    /// Numbers whose last object was deleted with Delete: free to register again.
    reusable: Vec<String>,
    next: usize,
    report: Report,
    passwords: Vec<String>,
}

impl Chaos<'_> {
    fn fresh_number(&mut self) -> String {
        loop {
            let n: u64 = self.rng.random_range(2_000_000_000..9_999_999_999);
            let s = format!("+1{n}");
            if self.numbers.insert(s.clone()) {
                return s;
            }
        }
    }

    fn password(&mut self) -> String {
        let p = format!(
            "pw-{}-{:016x}",
            self.passwords.len(),
            self.rng.random::<u64>()
        );
        self.passwords.push(p.clone());
        p
    }

    fn count(&mut self, op: &'static str) {
        *self.report.ops.entry(op).or_insert(0) += 1;
    }

    fn fault_count(&mut self, what: String) {
        *self.report.faults.entry(what).or_insert(0) += 1;
    }

    fn live(&self) -> Vec<usize> {
        (0..self.objs.len())
            .filter(|&i| self.objs[i].deleted.is_none())
            .collect()
    }

    /// Apply the object as the test models it.
    async fn apply_obj(&self, o: &Obj) {
        let mut manifest = json!({"metadata": {"name": o.name}, "spec": Self::spec_of(o)});
        if let Some(id) = &o.adopts {
            manifest["metadata"]["annotations"] = json!({"oneinbox.ai/phone-number-id": id});
        }
        self.w
            .apply_full(self.labelled(manifest))
            .await
            .expect("apply PhoneNumber");
    }

    /// Every apply carries the run's label (server-side apply would drop one left out).
    fn labelled(&self, mut manifest: Value) -> Value {
        manifest["metadata"]["labels"] = json!({ RUN_LABEL: self.w.ns });
        manifest
    }

    fn spec_of(o: &Obj) -> Value {
        let mut spec = match &o.secret {
            Some(secret) => sip_spec(&o.number, secret),
            None => credential_spec(&o.number),
        };
        spec = with(
            spec,
            json!({
                "agentId": o.agent,
                "friendlyName": o.friendly,
                "deletionPolicy": o.policy.as_str(),
                "replacementPolicy": if o.replace { "Replace" } else { "Manual" },
            }),
        );
        match &o.voicemail {
            Some(v) => {
                spec["inboundRouting"] =
                    json!({"fallback": {"agentId": o.agent}, "voicemailMessage": v});
            }
            None => {
                if let Some(m) = spec.as_object_mut() {
                    m.remove("inboundRouting");
                }
            }
        }
        spec
    }

    async fn create(&mut self, reuse: Option<String>) {
        let number = match reuse {
            Some(n) => n,
            None => self.fresh_number(),
        };
        let name = format!("pn-{}", self.next);
        self.next += 1;
        let sip = self.rng.random_bool(0.7);
        let password = self.password();
        let obj = Obj {
            name: name.clone(),
            number,
            secret: sip.then(|| format!("{name}-sip")),
            password: password.clone(),
            replace: sip && self.rng.random_bool(0.5),
            policy: if self.rng.random_bool(0.3) {
                Policy::Orphan
            } else {
                Policy::Delete
            },
            paused: false,
            agent: if self.rng.random_bool(0.5) {
                AGENT
            } else {
                AGENT2
            },
            friendly: format!("line {name}"),
            voicemail: self
                .rng
                .random_bool(0.6)
                .then(|| format!("Sorry ({})", self.rng.random_range(0..1000))),
            rotations: 0,
            deleted: None,
            adopts: None,
        };
        // Mostly the Secret first; sometimes after the object (SecretNotFound, then the watch).
        let secret_after = self.rng.random_bool(0.15);
        if let (Some(s), false) = (&obj.secret, secret_after) {
            self.w.secret(s, &password).await;
        }
        self.apply_obj(&obj).await;
        if let (Some(s), true) = (&obj.secret, secret_after) {
            self.w.secret(s, &password).await;
        }
        self.objs.push(obj);
    }

    /// Register a number outside the cluster, then adopt it deliberately with a new object.
    async fn adopt(&mut self) -> bool {
        let number = self.fresh_number();
        // The mock's faults hit this POST too: retry until the number is known registered (a
        // 409 after an answer lost in transit names the id), so the run accounts for it.
        let client = reqwest::Client::new();
        let mut id = None;
        for _ in 0..50 {
            let outside = client
                .post(format!("{}/v1/phone-numbers", self.w.mock.url))
                .bearer_auth(API_KEY)
                .json(&json!({"phone_number": number, "provider": "telnyx", "agent_id": AGENT, "credential_id": CREDENTIAL}))
                .send()
                .await;
            if let Ok(r) = outside {
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or_default();
                id = match status {
                    201 => v["id"].as_str().map(str::to_owned),
                    409 => v["detail"]["phone_id"].as_str().map(str::to_owned),
                    _ => None,
                };
                if id.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(id) = id else {
            self.report.op_errors.push(format!(
                "outside POST for adoption of {number}: no answer in 50 tries"
            ));
            return false;
        };
        let name = format!("pn-{}", self.next);
        self.next += 1;
        let obj = Obj {
            name: name.clone(),
            number,
            secret: None,
            password: String::new(),
            replace: false,
            policy: if self.rng.random_bool(0.3) {
                Policy::Orphan
            } else {
                Policy::Delete
            },
            paused: false,
            agent: if self.rng.random_bool(0.5) {
                AGENT
            } else {
                AGENT2
            },
            friendly: format!("line {name}"),
            voicemail: None,
            rotations: 0,
            deleted: None,
            adopts: Some(id),
        };
        self.apply_obj(&obj).await;
        self.objs.push(obj);
        true
    }

    /// A newcomer's claim on live object `i`: the owner, its registration id (`None` while
    /// status names none), a fresh name, and a spec for the owner's number with another agent.
    async fn claimant(&mut self, i: usize, prefix: &str) -> Option<(Obj, String, String, Value)> {
        let owner = self.objs[i].clone();
        let id = match self.w.pns.get_opt(&owner.name).await {
            Ok(Some(pn)) => pn.status.and_then(|s| s.phone_number_id),
            _ => None,
        }?;
        let name = format!("{prefix}-{}", self.next);
        self.next += 1;
        let mut spec = credential_spec(&owner.number);
        spec["agentId"] = json!(if owner.agent == AGENT { AGENT2 } else { AGENT });
        spec["deletionPolicy"] = json!("Delete");
        Some((owner, id, name, spec))
    }

    /// A newcomer names a live object's registration id (and number), stays a little, and is
    /// deleted with policy Delete: it must never touch that registration.
    async fn claim_id_of(&mut self, i: usize) -> bool {
        let Some((_, id, name, spec)) = self.claimant(i, "claim").await else {
            return false;
        };
        let manifest = json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": name, "annotations": {"oneinbox.ai/phone-number-id": id}},
            "spec": spec,
        });
        if let Err(e) = self.w.apply_full(self.labelled(manifest)).await {
            self.report.op_errors.push(format!("claim {name}: {e}"));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(300..1200))).await;
        self.w.delete(&name).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.w.pns.get_opt(&name).await, Ok(Some(_))) {
            if Instant::now() > deadline {
                self.report.op_errors.push(format!(
                    "claim {name}: still present 10 s after its deletion"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    }

    /// A newcomer in the other namespace claims a live object's number, half of the time with
    /// its registration id as well: it must be Stalled without a finalizer and never act (the
    /// run's end checks that the other namespace saw no Registered, Adopted, Updated,
    /// DriftCorrected or Deregistered event). Then it is deleted.
    async fn claim_across(&mut self, i: usize) -> bool {
        let Some(other) = self.other.clone() else {
            return false;
        };
        let Some((owner, id, name, spec)) = self.claimant(i, "across").await else {
            return false;
        };
        let mut manifest = json!({
            "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": name},
            "spec": spec,
        });
        if self.rng.random_bool(0.5) {
            manifest["metadata"]["annotations"] = json!({"oneinbox.ai/phone-number-id": id});
        }
        let manifest = self.labelled(manifest);
        if let Err(e) = other
            .patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&manifest),
            )
            .await
        {
            self.report
                .op_errors
                .push(format!("claim across {name}: {e}"));
            return false;
        }
        // Stalled (a decision from the watch alone: no API call needed), never finalized; the
        // claim is deleted after 15 s at the latest.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match other.get_opt(&name).await {
                Ok(Some(pn)) if pn.condition("Stalled").is_some() => {
                    if !pn.finalizers().is_empty() {
                        self.report.cross_namespace_faults.push(format!(
                            "{name} claiming {} got finalizers {:?}",
                            owner.number,
                            pn.finalizers()
                        ));
                    }
                    break;
                }
                _ if Instant::now() > deadline => {
                    // Liveness, not safety: behind a restart's queue the operator may not have
                    // reached it yet. What it must never do is checked at the end.
                    self.report.cross_namespace_unseen += 1;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let _ = other.delete(&name, &DeleteParams::default()).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(other.get_opt(&name).await, Ok(Some(_))) {
            if Instant::now() > deadline {
                self.report
                    .cross_namespace_faults
                    .push(format!("{name}: still present 15 s after its deletion"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    }

    async fn update(&mut self, i: usize) {
        let o = &mut self.objs[i];
        o.agent = if o.agent == AGENT { AGENT2 } else { AGENT };
        o.friendly = format!("line {} v{}", o.name, self.rng.random_range(0..10_000));
        if self.rng.random_bool(0.7) {
            o.voicemail = Some(format!("Sorry ({})", self.rng.random_range(0..10_000)));
        }
        let o = self.objs[i].clone();
        self.apply_obj(&o).await;
    }

    async fn rotate(&mut self, i: usize) {
        let pw = self.password();
        let o = &mut self.objs[i];
        o.password = pw.clone();
        o.rotations += 1;
        let secret = o.secret.clone().unwrap_or_default();
        self.w.secret(&secret, &pw).await;
    }

    async fn delete(&mut self, i: usize, policy: Policy) {
        let name = self.objs[i].name.clone();
        if self.objs[i].policy != policy {
            self.objs[i].policy = policy;
            let o = self.objs[i].clone();
            self.apply_obj(&o).await;
        }
        let Ok(Some(pn)) = self.w.pns.get_opt(&name).await else {
            return;
        };
        let id_at_delete = pn.status.as_ref().and_then(|s| s.phone_number_id.clone());
        // An adoption deleted before the operator confirmed it (a GET, then the finalizer)
        // has no finalizer: it goes at once, and the adoption was never carried out (the
        // registration stays, as with Orphan). The delete is conditional on the version read,
        // so that is known exactly.
        let finalized = pn.finalizers().iter().any(|f| f == FINALIZER);
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: pn.resource_version(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = self.w.pns.delete(&name, &dp).await {
            // Changed since it was read (the operator wrote): tried again by a later step.
            if !matches!(&e, kube::Error::Api(a) if a.code == 409) {
                self.report.op_errors.push(format!("delete {name}: {e}"));
            }
            return;
        }
        let policy = if !finalized && self.objs[i].adopts.is_some() {
            self.count("delete_adoption_unconfirmed");
            Policy::Orphan
        } else {
            policy
        };
        // The Secret goes too, half of the time: deletion never needs it.
        if let Some(s) = self.objs[i].secret.clone()
            && self.rng.random_bool(0.5)
        {
            let secrets: Api<Secret> = Api::namespaced(self.w.client.clone(), &self.w.ns);
            if let Err(e) = secrets.delete(&s, &DeleteParams::default()).await {
                self.report
                    .op_errors
                    .push(format!("delete Secret {s}: {e}"));
            }
        }
        self.objs[i].deleted = Some(Deleted {
            policy,
            id_at_delete,
        });
        if policy == Policy::Delete && self.objs[i].rotations == 0 {
            self.reusable.push(self.objs[i].number.clone());
        }
    }

    async fn set_paused(&mut self, i: usize, paused: bool) -> bool {
        let name = self.objs[i].name.clone();
        let body = json!({"metadata": {"annotations": {
            "oneinbox.ai/paused": if paused { Some("true") } else { None }
        }}});
        match self
            .w
            .pns
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                self.objs[i].paused = paused;
                true
            }
            // A deleted object may already be gone.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.objs[i].paused = false;
                true
            }
            Err(e) => {
                self.report
                    .op_errors
                    .push(format!("pause={paused} {name}: {e}"));
                false
            }
        }
    }

    /// One random churn operation; `operator_up`: no killed operator is waiting to be
    /// restarted (a cross-namespace claim waits for the operator's answer).
    async fn step(&mut self, p: &Params, operator_up: bool) {
        let live = self.live();
        let n = live.len();
        let target = p.objects.max(1);
        let sip_replace: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| self.objs[i].secret.is_some() && self.objs[i].replace)
            .collect();
        let paused: Vec<usize> = (0..self.objs.len())
            .filter(|&i| self.objs[i].paused)
            .collect();
        let unpaused: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| !self.objs[i].paused)
            .collect();
        let with_id: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| !self.objs[i].paused)
            .collect();
        let weights: [f64; 11] = [
            if n < target { 3.0 } else { 0.4 },
            if p.reuse_numbers && !self.reusable.is_empty() && n < target * 6 / 5 {
                0.8
            } else {
                0.0
            },
            if n > 0 { 3.0 } else { 0.0 },
            if sip_replace.is_empty() { 0.0 } else { 1.5 },
            if n > target * 4 / 5 { 1.2 } else { 0.3 },
            if n > target * 4 / 5 { 0.6 } else { 0.15 },
            if unpaused.is_empty() || paused.len() * 5 > n {
                0.0
            } else {
                0.7
            },
            if paused.is_empty() { 0.0 } else { 1.5 },
            if n < target * 6 / 5 { 0.5 } else { 0.0 },
            if with_id.is_empty() { 0.0 } else { 0.4 },
            if with_id.is_empty() || !p.cross_namespace || !operator_up {
                0.0
            } else {
                0.4
            },
        ];
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return;
        }
        let mut x = self.rng.random_range(0.0..total);
        let mut kind = 0;
        for (k, wgt) in weights.iter().enumerate() {
            if x < *wgt {
                kind = k;
                break;
            }
            x -= wgt;
        }
        let op = OPS[kind];
        match kind {
            0 => self.create(None).await,
            1 => {
                let idx = self.rng.random_range(0..self.reusable.len());
                let number = self.reusable.swap_remove(idx);
                self.create(Some(number)).await;
            }
            2 => {
                let i = *live.choose(&mut self.rng).unwrap_or(&0);
                self.update(i).await;
            }
            3 => {
                let i = *sip_replace.choose(&mut self.rng).unwrap_or(&0);
                self.rotate(i).await;
            }
            4 | 5 => {
                let i = *live.choose(&mut self.rng).unwrap_or(&0);
                let policy = if kind == 4 {
                    Policy::Delete
                } else {
                    Policy::Orphan
                };
                self.delete(i, policy).await;
            }
            6 => {
                let i = *unpaused.choose(&mut self.rng).unwrap_or(&0);
                if !self.set_paused(i, true).await {
                    return;
                }
            }
            8 => {
                if !self.adopt().await {
                    return;
                }
            }
            9 => {
                let i = *with_id.choose(&mut self.rng).unwrap_or(&0);
                if !self.claim_id_of(i).await {
                    return;
                }
            }
            10 => {
                let i = *with_id.choose(&mut self.rng).unwrap_or(&0);
                if !self.claim_across(i).await {
                    return;
                }
            }
            _ => {
                let i = *paused.choose(&mut self.rng).unwrap_or(&0);
                if !self.set_paused(i, false).await {
                    return;
                }
            }
        }
        self.count(op);
    }

    /// A fault phase: a new mock configuration, sometimes with one-shot faults queued.
    async fn fault_phase(&mut self) -> Duration {
        let secs = self.rng.random_range(2..=5);
        let kind = self.rng.random_range(0..7);
        let cfg = match kind {
            0 => {
                let status = *[500u16, 502, 503].choose(&mut self.rng).unwrap_or(&503);
                let rate = self.rng.random_range(0.15..0.4);
                self.fault_count(format!("5xx phase ({status})"));
                json!({"error_rate": rate, "error_status": status})
            }
            1 => {
                let ep = *[POST, DELETE, GET, PATCH, LIST]
                    .choose(&mut self.rng)
                    .unwrap_or(&POST);
                self.fault_count(format!("5xx phase on {ep}"));
                json!({"endpoints": {ep: {"error_rate": 0.6, "error_status": 503}}})
            }
            2 => {
                self.fault_count("429 phase (rate limit 4 rps)".into());
                json!({"rate_limit_rps": 4.0, "rate_limit_burst": 4})
            }
            3 => {
                self.fault_count("latency spike (0.8-3.3 s)".into());
                json!({"latency_ms": 800, "latency_jitter_ms": 2500})
            }
            5 => {
                // The key is refused for a while (as when it is revoked and restored).
                for ep in [POST, DELETE, GET, PATCH, LIST] {
                    self.w
                        .mock
                        .fault(json!({"endpoint": ep, "kind": "status", "status": 401, "count": 4}))
                        .await;
                }
                self.fault_count("401 window (4 per endpoint)".into());
                json!({})
            }
            4 => {
                let secs = self.rng.random_range(2..=4);
                self.fault_count("full outage (503 for all)".into());
                self.w
                    .mock
                    .config(json!({"error_rate": 1.0, "error_status": 503}))
                    .await;
                return Duration::from_secs(secs);
            }
            _ => {
                self.fault_count("calm phase".into());
                json!({})
            }
        };
        self.w.mock.config(cfg).await;
        // One-shot faults on top.
        for _ in 0..self.rng.random_range(0..=2) {
            let (spec, what) = match self.rng.random_range(0..6) {
                0 => (
                    json!({"endpoint": POST, "kind": "commit_then_drop", "count": 1}),
                    "commit_then_drop POST",
                ),
                1 => (
                    json!({"endpoint": DELETE, "kind": "commit_then_drop", "count": 1}),
                    "commit_then_drop DELETE",
                ),
                2 => (
                    json!({"endpoint": POST, "kind": "commit_then_delay", "delay_ms": 4000, "count": 1}),
                    CTD_POST,
                ),
                3 => {
                    let ep = *[POST, DELETE, GET, PATCH, LIST]
                        .choose(&mut self.rng)
                        .unwrap_or(&GET);
                    let ra = self.rng.random_range(1..=2).to_string();
                    (
                        json!({"endpoint": ep, "kind": "status", "status": 429, "retry_after": ra, "count": 2}),
                        "429 with Retry-After (x2)",
                    )
                }
                4 => {
                    let ep = *[GET, PATCH, LIST].choose(&mut self.rng).unwrap_or(&GET);
                    (
                        json!({"endpoint": ep, "kind": "drop", "count": 1}),
                        "drop (no answer)",
                    )
                }
                _ => (
                    json!({"endpoint": PATCH, "kind": "commit_then_drop", "count": 1}),
                    "commit_then_drop PATCH",
                ),
            };
            self.w.mock.fault(spec).await;
            self.fault_count(what.to_string());
        }
        Duration::from_secs(secs)
    }
}

/// The operators of the run: one, or two electing replicas.
struct Operators {
    replicas: Vec<Operator>,
    ha: bool,
    ns: String,
}

impl Operators {
    async fn leader(&self, client: &kube::Client) -> Option<usize> {
        if !self.ha {
            return Some(0);
        }
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.ns);
        let holder = leases
            .get_opt("oneinbox-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)?;
        self.replicas.iter().position(|r| {
            r.env
                .iter()
                .any(|(k, v)| k == "POD_NAME" && holder.starts_with(v.as_str()))
        })
    }

    fn logs(&self, w: &World) -> String {
        let mut s = w.operator.log_text();
        for r in &self.replicas {
            s.push_str(&r.log_text());
        }
        s
    }
}

/// What must hold once healed, checked without kstatus (cheap, polled until it holds).
struct Converged {
    ok: bool,
    why: String,
}

fn registrations_by_number(regs: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for r in regs {
        m.entry(r["phone_number"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(r.clone());
    }
    m
}

/// The latest object per number (later objects reuse numbers of deleted ones).
/// `status.phoneNumberId` of the live object `name`, if any.
fn status_id(by_name: &HashMap<String, &PhoneNumber>, name: &str) -> Option<String> {
    by_name
        .get(name)
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phone_number_id.clone())
}

fn latest_by_number(objs: &[Obj]) -> BTreeMap<String, &Obj> {
    let mut m = BTreeMap::new();
    for o in objs {
        m.insert(o.number.clone(), o);
    }
    m
}

/// How the registration `r` of live object `o` differs from its spec (empty = in line): agent,
/// friendly name, voicemail, and whether the status hash is that of the current password.
fn remote_diffs(o: &Obj, pn: &PhoneNumber, r: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    if r["agent_id"].as_str() != Some(o.agent) {
        diffs.push(format!("agent {} != {}", r["agent_id"], o.agent));
    }
    if r["friendly_name"].as_str() != Some(o.friendly.as_str()) {
        diffs.push(format!("friendly {} != {}", r["friendly_name"], o.friendly));
    }
    if let Some(v) = &o.voicemail {
        let got = r["inbound_routing"]["voicemail_message"].as_str();
        if got != Some(v.as_str()) {
            diffs.push(format!("voicemail {got:?} != {v}"));
        }
    }
    let creds = match &o.secret {
        Some(_) => Credentials::Sip {
            trunk_address: "example.pstn.twilio.com".into(),
            auth_username: "oneinbox".into(),
            auth_password: SecretString::new(o.password.clone()),
        },
        None => Credentials::Stored {
            credential_id: CREDENTIAL.into(),
        },
    };
    // The operator derives the hash key from its API key.
    let key = HashKey::derive(API_KEY.as_bytes());
    let want = credentials_hash(&key, &pn.uid().unwrap_or_default(), &creds);
    if pn
        .status
        .as_ref()
        .and_then(|s| s.credentials_hash.as_deref())
        != Some(want.as_str())
    {
        diffs.push("credentialsHash is not that of the current password".into());
    }
    diffs
}

fn converged(objs: &[Obj], pns: &[PhoneNumber], regs: &[Value]) -> Converged {
    let by_name: HashMap<String, &PhoneNumber> = pns.iter().map(|p| (p.name_any(), p)).collect();
    let regs_by_number = registrations_by_number(regs);
    let mut why = Vec::new();
    for o in objs {
        match (&o.deleted, by_name.get(&o.name)) {
            (Some(_), Some(_)) => why.push(format!("{} still exists after delete", o.name)),
            (None, None) => why.push(format!("{} is missing", o.name)),
            (None, Some(pn)) => {
                if !(is_ready(pn) && synced(pn)) {
                    why.push(format!("{} not Ready+synced", o.name));
                } else if pn.condition("Reconciling").is_some() || pn.condition("Stalled").is_some()
                {
                    why.push(format!("{} Reconciling or Stalled", o.name));
                }
            }
            (Some(_), None) => {}
        }
    }
    for (number, o) in latest_by_number(objs) {
        let regs = regs_by_number.get(&number).map(Vec::len).unwrap_or(0);
        match &o.deleted {
            None => {
                let id = status_id(&by_name, &o.name);
                let matches = regs_by_number
                    .get(&number)
                    .is_some_and(|v| v.len() == 1 && v[0]["id"].as_str() == id.as_deref());
                if !matches {
                    why.push(format!(
                        "{number} ({}): {regs} registrations, status id {id:?}",
                        o.name
                    ));
                } else if let (Some(pn), Some(r)) = (
                    by_name.get(&o.name),
                    regs_by_number.get(&number).and_then(|v| v.first()),
                ) {
                    // Every update and rotation applied, not only Ready.
                    let diffs = remote_diffs(o, pn, r);
                    if !diffs.is_empty() {
                        why.push(format!("{}: {}", o.name, diffs.join(", ")));
                    }
                }
            }
            Some(d) if d.policy == Policy::Delete && regs > 0 => why.push(format!(
                "{number}: deleted with Delete, {regs} registrations"
            )),
            Some(_) if regs > 1 => why.push(format!("{number}: orphaned, {regs} registrations")),
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = objs.iter().map(|o| o.number.as_str()).collect();
    for n in regs_by_number.keys() {
        if !known.contains(n.as_str()) {
            why.push(format!("registration of unknown number {n}"));
        }
    }
    Converged {
        ok: why.is_empty(),
        why: why.into_iter().take(8).collect::<Vec<_>>().join("; "),
    }
}

fn check(report: &mut Report, name: &'static str, ok: bool, detail: String) {
    report.checks.push(Check { name, ok, detail });
}

/// Run the soak. Panics only on set-up failures; invariant violations are in the report.
pub async fn run(p: Params) -> Report {
    let started = Instant::now();
    let operator_args = [
        "--poll-interval",
        p.poll_interval,
        "--min-poll-interval",
        p.poll_interval,
    ];
    let mut w = World::start_with("chaos", &[], &operator_args).await;
    // The World's own operator is replaced by ours (one, or two electing replicas), so that
    // killing and restarting them never needs the World mutably while the churn borrows it.
    w.operator.kill();
    let w = w;
    let selector = format!("{RUN_LABEL}={}", w.ns);
    let other_ns = if p.cross_namespace {
        Some(create_namespace(&w.client, "chaos-other").await)
    } else {
        None
    };
    let mut ops = Operators {
        replicas: Vec::new(),
        ha: p.ha,
        ns: w.ns.clone(),
    };
    let ns = w.ns.clone();
    let mut args: Vec<&str> = operator_args.to_vec();
    if p.cross_namespace {
        args.extend(["--label-selector", &selector]);
    }
    if p.ha {
        grant_lease_rbac(&w.ns);
        args.extend([
            "--leader-election",
            "--lease-namespace",
            &ns,
            "--lease-duration",
            "4s",
            "--lease-grace",
            "2s",
        ]);
    }
    // With partitions, each replica reaches the API server through a proxy of its own.
    let mut proxies = Vec::new();
    for r in if p.ha { &["a", "b"][..] } else { &["a"][..] } {
        let pod = format!("chaos-{r}");
        let mut env = vec![("POD_NAME".to_string(), pod.clone())];
        if p.ha && p.partitions > 0 {
            let (_, server) = kubeconfig_through(0, &pod);
            let proxy = Proxy::start(server).await;
            let (kc, _) = kubeconfig_through(proxy.port, &format!("{}-{pod}", w.ns));
            env.push(("KUBECONFIG".into(), kc.display().to_string()));
            proxies.push(proxy);
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ops.replicas.push(Operator::start_as(
            &w.ns,
            &w.mock.url,
            &args,
            &env,
            &format!("-{r}"),
        ));
    }
    let mut c = Chaos {
        w: &w,
        other: other_ns
            .as_ref()
            .map(|n| Api::namespaced(w.client.clone(), n)),
        rng: StdRng::seed_from_u64(p.seed),
        objs: Vec::new(),
        numbers: HashSet::new(),
        reusable: Vec::new(),
        next: 0,
        report: Report {
            seed: p.seed,
            summary: format!(
                "objects {}, churn {:?}, max ops {}, kills {}, HA {}, faults {}, reuse numbers {}, poll {}, namespace {}, cross-namespace {:?}, partitions {}, plane faults {} (etcd outage {:?})",
                p.objects,
                p.churn,
                p.max_ops,
                p.kills,
                p.ha,
                p.faults,
                p.reuse_numbers,
                p.poll_interval,
                w.ns,
                other_ns,
                p.partitions,
                p.plane_faults,
                p.etcd_outage,
            ),
            ..Report::default()
        },
        passwords: Vec::new(),
    };

    // The initial population (counted as creates).
    for _ in 0..p.objects {
        c.create(None).await;
        c.count("create");
    }

    // Churn, faults, kills and sampling, interleaved in one bounded loop.
    let churn_start = Instant::now();
    let churn_end = churn_start + p.churn;
    let mut kill_at: Vec<Instant> = (0..p.kills)
        .map(|_| churn_start + p.churn.mul_f64(c.rng.random_range(0.1..0.9)))
        .collect();
    kill_at.sort();
    kill_at.reverse();
    let mut respawn: Option<(usize, Instant)> = None;
    let mut partition_at: Vec<Instant> = if p.ha && !proxies.is_empty() {
        (0..p.partitions)
            .map(|_| churn_start + p.churn.mul_f64(c.rng.random_range(0.1..0.8)))
            .collect()
    } else {
        Vec::new()
    };
    partition_at.sort();
    partition_at.reverse();
    // (replica, since, reconnect at)
    let mut partitioned: Option<(usize, Instant, Instant)> = None;
    // The plane faults, at a third and two thirds of the churn.
    let mut plane_at: Vec<(Instant, &str)> = if p.plane_faults {
        vec![
            (churn_start + p.churn.mul_f64(2.0 / 3.0), "etcd"),
            (churn_start + p.churn.mul_f64(1.0 / 3.0), "apiserver"),
        ]
    } else {
        Vec::new()
    };
    let mut next_fault = churn_start + Duration::from_secs(1);
    let mut next_sample = churn_start;
    let mut sampled_dups = Vec::new();
    let mut ops_done = 0usize;
    while Instant::now() < churn_end && ops_done < p.max_ops {
        let now = Instant::now();
        if p.faults && now >= next_fault {
            next_fault = now + c.fault_phase().await;
        }
        if let Some((idx, at)) = respawn
            && now >= at
        {
            ops.replicas[idx].spawn();
            respawn = None;
        }
        // A replica that exited on its own (a fenced leader does) is restarted, as its pod
        // would be.
        for (idx, r) in ops.replicas.iter_mut().enumerate() {
            if respawn.is_none_or(|(k, _)| k != idx) && r.exited() {
                r.spawn();
                c.report.plane_events.push(format!(
                    "replica {idx} exited on its own at {:.1} s of the churn; restarted",
                    churn_start.elapsed().as_secs_f64()
                ));
            }
        }
        if respawn.is_none() && kill_at.last().is_some_and(|t| now >= *t) {
            // In HA mode nobody may hold the Lease for a moment: the kill then waits for one.
            if let Some(idx) = ops.leader(&w.client).await {
                kill_at.pop();
                ops.replicas[idx].kill();
                c.report.kills += 1;
                let delay = Duration::from_millis(c.rng.random_range(0..2000));
                respawn = Some((idx, now + delay));
            }
        }
        if partitioned.is_none()
            && partition_at.last().is_some_and(|t| now >= *t)
            && let Some(idx) = ops.leader(&w.client).await
        {
            partition_at.pop();
            proxies[idx].stop();
            c.report.plane_events.push(format!(
                "leader partition: replica {idx} (the leader) cut off the API server at {:.1} s of the churn",
                churn_start.elapsed().as_secs_f64()
            ));
            // Three lease durations (4 s each): the other replica takes over meanwhile.
            partitioned = Some((idx, now, now + Duration::from_secs(12)));
        }
        if let Some((idx, since, until)) = partitioned
            && now >= until
        {
            proxies[idx].restart().await;
            let leader = ops.leader(&w.client).await;
            c.report.plane_events.push(format!(
                "leader partition healed: replica {idx} reconnected after {:.1} s (leader now {leader:?})",
                since.elapsed().as_secs_f64()
            ));
            partitioned = None;
        }
        if let Some((at, what)) = plane_at.last().copied()
            && now >= at
        {
            plane_at.pop();
            let event = match what {
                "apiserver" => restart_apiserver(&w.client).await,
                _ => etcd_outage(&w.client, p.etcd_outage).await,
            };
            c.report.plane_events.push(event);
        }
        if now >= next_sample {
            next_sample = now + Duration::from_secs(2);
            let regs = w.mock.registrations().await;
            for (n, v) in registrations_by_number(&regs) {
                if v.len() > 1 {
                    sampled_dups.push(n);
                }
            }
        }
        c.step(&p, respawn.is_none()).await;
        ops_done += 1;
        let gap = c.rng.random_range(p.op_gap_ms.0..=p.op_gap_ms.1);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    c.report.churn_took = churn_start.elapsed();

    // Heal: no faults, every operator running, nothing paused.
    w.mock.config(json!({})).await;
    w.mock
        .send(reqwest::Method::DELETE, "/_mock/faults", json!({}))
        .await;
    let healed = Instant::now();
    for i in 0..c.objs.len() {
        if c.objs[i].paused {
            c.set_paused(i, false).await;
        }
    }
    if let Some((idx, _)) = respawn {
        ops.replicas[idx].spawn();
    }
    if let Some((idx, _, _)) = partitioned {
        proxies[idx].restart().await;
    }
    let objs = std::mem::take(&mut c.objs);
    let passwords = std::mem::take(&mut c.passwords);
    let mut report = std::mem::take(&mut c.report);
    drop(c);

    // Converge (bounded).
    let deadline = healed + p.converge_timeout;
    let mut last_why = String::new();
    loop {
        let pns = w.pns.list(&ListParams::default()).await.map(|l| l.items);
        let regs = w.mock.registrations().await;
        if let Ok(pns) = pns {
            let cv = converged(&objs, &pns, &regs);
            if cv.ok {
                report.converged_after = Some(healed.elapsed());
                break;
            }
            last_why = cv.why;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if report.converged_after.is_none() {
        check(
            &mut report,
            "converged",
            false,
            format!("not within {:?}: {last_why}", p.converge_timeout),
        );
    }

    // Quiet after convergence: no OneInbox writes with nothing changing.
    let writes = |calls: &Value| -> u64 {
        [POST, PATCH, DELETE]
            .iter()
            .map(|e| calls.get(*e).and_then(Value::as_u64).unwrap_or(0))
            .sum()
    };
    let before = writes(&w.mock.calls().await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = writes(&w.mock.calls().await);
    check(
        &mut report,
        "no writes once converged",
        after == before,
        format!(
            "{} OneInbox writes in 3 s after convergence",
            after - before
        ),
    );

    // Final state.
    let pns = w
        .pns
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    let regs = w.mock.registrations().await;
    report.live_objects = pns.len();
    report.registrations = regs.len();
    let by_name: HashMap<String, &PhoneNumber> = pns.iter().map(|p| (p.name_any(), p)).collect();
    let regs_by_id: HashMap<String, &Value> = regs
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or_default().to_string(), r))
        .collect();
    let regs_by_number = registrations_by_number(&regs);
    let latest = latest_by_number(&objs);

    // 1. Registrations are exactly the expected set.
    let mut leaks = Vec::new();
    let mut losses = Vec::new();
    let mut orphans_kept = 0;
    let mut orphans_without = 0;
    for (number, o) in &latest {
        let have = regs_by_number.get(number).cloned().unwrap_or_default();
        match &o.deleted {
            None => {
                let id = status_id(&by_name, &o.name);
                if have.len() != 1 || have[0]["id"].as_str() != id.as_deref() {
                    losses.push(format!(
                        "{} {number}: status id {id:?}, registrations {:?}",
                        o.name,
                        have.iter().map(|r| r["id"].clone()).collect::<Vec<_>>()
                    ));
                }
            }
            Some(d) if d.policy == Policy::Delete => {
                if !have.is_empty() {
                    leaks.push(format!("{} {number} (deleted, policy Delete)", o.name));
                }
            }
            Some(d) => {
                if have.len() > 1 {
                    leaks.push(format!("{} {number} (orphaned) x{}", o.name, have.len()));
                }
                if have.is_empty() {
                    orphans_without += 1;
                    if o.rotations == 0
                        && let Some(id) = &d.id_at_delete
                    {
                        losses.push(format!(
                            "{} {number}: orphaned with id {id}, registration gone",
                            o.name
                        ));
                    }
                } else {
                    orphans_kept += 1;
                    if o.rotations == 0
                        && let Some(id) = &d.id_at_delete
                        && have[0]["id"].as_str() != Some(id.as_str())
                    {
                        losses.push(format!(
                            "{} {number}: orphaned with id {id}, registered as {}",
                            o.name, have[0]["id"]
                        ));
                    }
                }
            }
        }
    }
    for n in regs_by_number.keys() {
        if !latest.contains_key(n) {
            leaks.push(format!("unknown number {n}"));
        }
    }
    check(
        &mut report,
        "no leaked registration",
        leaks.is_empty(),
        if leaks.is_empty() {
            format!(
                "{} registrations = {} live + {} orphaned (+{} orphans deleted before registering)",
                regs.len(),
                objs.iter().filter(|o| o.deleted.is_none()).count(),
                orphans_kept,
                orphans_without
            )
        } else {
            leaks.join("; ")
        },
    );
    check(
        &mut report,
        "no lost registration",
        losses.is_empty(),
        if losses.is_empty() {
            "every live object's id is registered; every orphaned id kept".into()
        } else {
            losses.join("; ")
        },
    );

    // 2. Never two registrations of one number.
    let dups: Vec<&String> = regs_by_number
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(n, _)| n)
        .collect();
    check(
        &mut report,
        "one registration per number",
        dups.is_empty() && sampled_dups.is_empty(),
        format!("duplicates at the end: {dups:?}; in samples during the churn: {sampled_dups:?}"),
    );

    // 3. Nothing stuck in deletion.
    let stuck: Vec<&str> = objs
        .iter()
        .filter(|o| o.deleted.is_some() && by_name.contains_key(&o.name))
        .map(|o| o.name.as_str())
        .collect();
    let deleted = objs.iter().filter(|o| o.deleted.is_some()).count();
    check(
        &mut report,
        "no object stuck in deletion",
        stuck.is_empty(),
        format!("{deleted} deleted, still present: {stuck:?}"),
    );

    // 4. Every surviving object Ready, synced, kstatus Current; 5. remote equals spec.
    let mut not_current = Vec::new();
    let mut drift = Vec::new();
    let live: Vec<&Obj> = objs.iter().filter(|o| o.deleted.is_none()).collect();
    for o in &live {
        let Some(pn) = by_name.get(&o.name) else {
            not_current.push(format!("{} missing", o.name));
            continue;
        };
        let mut v = serde_json::to_value(pn).unwrap_or_default();
        v["apiVersion"] = json!("oneinbox.ai/v1alpha1");
        v["kind"] = json!("PhoneNumber");
        let (ks, _) = kstatus_of(&v.to_string());
        if !(is_ready(pn) && synced(pn) && ks == "Current") {
            not_current.push(format!(
                "{}: Ready {} synced {} kstatus {ks}",
                o.name,
                is_ready(pn),
                synced(pn)
            ));
        }
        let id = pn
            .status
            .as_ref()
            .and_then(|s| s.phone_number_id.clone())
            .unwrap_or_default();
        let Some(r) = regs_by_id.get(&id) else {
            continue; // reported as a loss
        };
        let diffs = remote_diffs(o, pn, r);
        if !diffs.is_empty() {
            drift.push(format!("{}: {}", o.name, diffs.join(", ")));
        }
    }
    check(
        &mut report,
        "all Ready, kstatus Current",
        not_current.is_empty(),
        if not_current.is_empty() {
            format!(
                "{} live objects Ready, observedGeneration == generation, kstatus Current",
                live.len()
            )
        } else {
            not_current.join("; ")
        },
    );
    let rotated = live.iter().filter(|o| o.rotations > 0).count();
    check(
        &mut report,
        "no lost update",
        drift.is_empty(),
        if drift.is_empty() {
            format!(
                "agent, name, voicemail and credentials of every registration match the spec ({rotated} rotated)"
            )
        } else {
            drift.join("; ")
        },
    );

    // 6. Calls: what the log proves.
    let calls = w.mock.calls().await;
    if let Some(m) = calls.as_object() {
        for (k, v) in m {
            report
                .calls
                .insert(k.clone(), v.as_u64().unwrap_or_default());
        }
    }
    let log = w.mock.get("/_mock/calls/log").await;
    let entries = log["entries"].as_array().cloned().unwrap_or_default();
    let max_seq = entries
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    report.log_complete = max_seq as usize == entries.len();
    for e in &entries {
        let outcome = match (e["status"].as_u64(), e["dropped"].as_bool()) {
            (Some(s), Some(true)) => format!("{s}+dropped"),
            (None, _) => "dropped".into(),
            (Some(s), _) => s.to_string(),
        };
        *report
            .outcomes
            .entry((
                e["endpoint"].as_str().unwrap_or_default().to_string(),
                outcome,
            ))
            .or_insert(0) += 1;
    }
    if let Some(m) = log["accepted"].as_object() {
        for (k, v) in m {
            report
                .accepted
                .insert(k.clone(), v.as_u64().unwrap_or_default());
        }
    }
    let acc = |k: &str| report.accepted.get(k).copied().unwrap_or(0);
    let (posts, deletes) = (acc(POST), acc(DELETE));
    // An adoption's outside registration is a committed POST too.
    let creates = ["create", "create_reusing_number", "adopt"]
        .iter()
        .map(|op| report.ops.get(op).copied().unwrap_or(0))
        .sum::<u64>();
    let rotations = report.ops.get("rotate_password").copied().unwrap_or(0);
    let delete_deletes = report.ops.get("delete_Delete").copied().unwrap_or(0);
    // Every committed write is recorded, including a `commit_then_delay` POST whose client gave
    // up before the answer: the registrations are exactly what the log says was committed.
    let net = posts as i64 - deletes as i64;
    check(
        &mut report,
        "accounting: POST - DELETE",
        net == regs.len() as i64,
        format!(
            "{posts} committed POSTs - {deletes} committed DELETEs = {net}; {} registrations",
            regs.len()
        ),
    );
    check(
        &mut report,
        "at most one POST per need",
        posts <= creates + rotations,
        format!("{posts} committed POSTs <= {creates} creates + {rotations} rotations"),
    );
    check(
        &mut report,
        "at most one DELETE per need",
        deletes <= delete_deletes + rotations,
        format!(
            "{deletes} committed DELETEs <= {delete_deletes} deletions (Delete) + {rotations} rotations"
        ),
    );

    // 7. No secret anywhere it could leak.
    let logs = ops.logs(&w);
    let event_list = w.events().await;
    for (reason, note) in &event_list {
        *report.events.entry(reason.clone()).or_insert(0) += 1;
        if reason == "DriftCorrected" || reason == "RegistrationLost" {
            report.notable_events.push(format!("{reason}: {note}"));
        }
    }
    let events = format!("{event_list:?}");
    let statuses = serde_json::to_string(&pns.iter().map(|p| &p.status).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut leaked = Vec::new();
    for s in passwords.iter().map(String::as_str).chain([API_KEY]) {
        for (what, text) in [("log", &logs), ("events", &events), ("status", &statuses)] {
            if text.contains(s) {
                leaked.push(format!("{s:?} in {what}"));
            }
        }
    }
    check(
        &mut report,
        "no secret in logs/events",
        leaked.is_empty() && !logs.is_empty(),
        format!(
            "{} passwords + the API key searched in {} log bytes, {} events, {} statuses{}",
            passwords.len(),
            logs.len(),
            event_list.len(),
            pns.len(),
            if leaked.is_empty() {
                String::new()
            } else {
                format!(": {}", leaked.join("; "))
            }
        ),
    );
    report.operator_logs = logs;

    // Cross-namespace claimants were refused and never acted on the registration they named.
    if let Some(other) = &other_ns {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(w.client.clone(), other);
        let acted: Vec<String> = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.reason.as_deref(),
                    Some(
                        "Registered"
                            | "Adopted"
                            | "Updated"
                            | "UpdatedOnAdoption"
                            | "DriftCorrected"
                            | "Deregistered"
                            | "Replacing"
                    )
                )
            })
            .map(|e| format!("{:?}: {:?}", e.reason, e.message))
            .collect();
        let claims = report
            .ops
            .get("claim_across_namespaces")
            .copied()
            .unwrap_or(0);
        let unseen = report.cross_namespace_unseen;
        let faults = [report.cross_namespace_faults.clone(), acted].concat();
        check(
            &mut report,
            "cross-namespace claims refused",
            faults.is_empty(),
            if faults.is_empty() {
                format!(
                    "{claims} claimants in {other}: none got a finalizer or acted ({unseen} deleted before the operator reached them)"
                )
            } else {
                faults.join("; ")
            },
        );
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.client.clone());
        let _ = namespaces.delete(other, &DeleteParams::default()).await;
    }

    // Leave nothing behind: delete what is left while the operator still runs (best effort,
    // bounded); World's drop releases whatever remains.
    let _ = w
        .pns
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let bye = Instant::now() + Duration::from_secs(20);
    while Instant::now() < bye {
        match w.pns.list(&ListParams::default()).await {
            Ok(l) if l.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    for r in &mut ops.replicas {
        r.kill();
    }
    let unique: BTreeSet<&str> = objs.iter().map(|o| o.number.as_str()).collect();
    report.summary.push_str(&format!(
        "\nobjects created {} on {} numbers; run took {:.1} s",
        objs.len(),
        unique.len(),
        started.elapsed().as_secs_f64()
    ));
    report
}

fn seed_from_env() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[tokio::test]
async fn chaos_smoke_loses_nothing_under_faults_and_a_kill() {
    let report = run(Params::smoke(seed_from_env())).await;
    println!("{}", report.render());
    if !report.passed() {
        let path = repo().join(format!("target/chaos-smoke-{}.log", report.seed));
        let _ = std::fs::write(&path, &report.operator_logs);
        println!("operator log: {}", path.display());
    }
    assert!(
        report.passed(),
        "chaos smoke failed (seed {}, rerun with CHAOS_SEED={}): {:#?}",
        report.seed,
        report.seed,
        report.failures()
    );
}

/// Restart kube-apiserver with the command line it runs with (the control plane of `make chaos`
/// is this run's alone); returns what happened, with the time until it was ready again.
async fn restart_apiserver(client: &kube::Client) -> String {
    let pid_file = state_dir().join("kube-apiserver.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("kube-apiserver.pid")
        .trim()
        .parse()
        .expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let started = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    // Gone, or a zombie (its parent, up.sh, is long gone; nobody may reap it).
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    // It stops listening at once but drains long-running requests for up to a minute: after a
    // 10 s grace, SIGKILL (the restart is the point, not the drain).
    while running() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if running() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        while running() && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stopped = started.elapsed();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir().join("logs/kube-apiserver.log"))
        .expect("log");
    let child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own process group: it outlives this run, as up.sh started it.
            .process_group(0)
            .spawn()
            .expect("start kube-apiserver")
    };
    std::fs::write(&pid_file, format!("{}\n", child.id())).expect("pid file");
    let ready = wait_apiserver(client).await;
    format!(
        "kube-apiserver restarted: stopped in {:.1} s, ready {:.1} s after the stop began",
        stopped.as_secs_f64(),
        ready.duration_since(started).as_secs_f64()
    )
}

/// Freeze etcd (SIGSTOP) for `outage`, then let it go on; the API server hangs meanwhile.
async fn etcd_outage(client: &kube::Client, outage: Duration) -> String {
    let pid = std::fs::read_to_string(state_dir().join("etcd.pid"))
        .expect("etcd.pid")
        .trim()
        .to_string();
    let started = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    tokio::time::sleep(outage).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let ready = wait_apiserver(client).await;
    format!(
        "etcd outage: stopped for {:.1} s, the API server answered {:.1} s after it resumed",
        outage.as_secs_f64(),
        ready.duration_since(started + outage).as_secs_f64()
    )
}

/// Until the API server serves PhoneNumbers again (bounded: 120 s). A restarted server answers
/// built-in paths before it has installed those of the CRDs (503 meanwhile).
async fn wait_apiserver(client: &kube::Client) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    let pns: Api<PhoneNumber> = Api::all(client.clone());
    loop {
        let lp = ListParams::default().limit(1);
        if pns.list(&lp).await.is_ok() || Instant::now() > deadline {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
