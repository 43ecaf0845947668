//! The decision table: each row is an observation and the step it must produce.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::controller::memory::{Checked, ObjectMemory};
use crate::controller::observe::{ObjectName, Outcome};
use crate::crd::{ANNOTATION_RECONCILE_REQUESTED_AT, DeletionPolicy, PhoneNumber};
use crate::definition::Definition;
use crate::oneinbox::Deregistered;
use crate::oneinbox::SecretString;

const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";
const OTHER_AGENT: &str = "11111111-2222-4333-8444-555555555555";
const CRED: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const NEW_CRED: &str = "aaaaaaaa-4b5a-4978-8695-a4b3c2d1e0f9";

fn settings() -> Settings {
    Settings {
        poll_interval: Duration::from_secs(600),
        min_poll_interval: Duration::from_secs(5),
        secret_grace_period: Duration::from_secs(30),
        provisioning_poll: Duration::from_secs(10),
        backoff_base: Duration::from_secs(5),
        backoff_max: Duration::from_secs(1800),
        kube_timeout: Duration::from_secs(10),
        hash_key: credentials::HashKey::derive(b"oi_sk_table"),
        secret_access: crate::secrets::SecretAccess::Watch,
    }
}

/// A fresh object with a stored credential (no Secret to read).
fn object() -> Value {
    json!({
        "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": "sales", "namespace": "voice", "uid": "uid-1", "generation": 1,
                     "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"phoneNumber": "+15551234567", "provider": "twilio", "agentId": AGENT,
                 "credentialId": CRED}
    })
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": "m",
           "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
}

fn hash_of(credential: &str) -> String {
    credentials::credentials_hash(
        &settings().hash_key,
        "uid-1",
        &Credentials::Stored {
            credential_id: credential.into(),
        },
    )
}

/// Registered as `id1`, Ready, with the id annotation and the finalizer.
fn registered() -> Value {
    let mut o = object();
    o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
    o["metadata"]["annotations"] = json!({ANNOTATION_PHONE_NUMBER_ID: "id1"});
    o["status"] = json!({
        "observedGeneration": 1, "phoneNumberId": "id1", "state": "active",
        "credentialsHash": hash_of(CRED),
        "conditions": [condition("Ready", "True", "Available")]
    });
    o
}

/// Registration `id`, of a number other than the objects' own.
fn reg_of_another_number(id: &str) -> Registration {
    Registration {
        phone_number: "+15550000000".into(),
        ..reg(id)
    }
}

fn reg(id: &str) -> Registration {
    Registration {
        id: id.into(),
        phone_number: "+15551234567".into(),
        friendly_name: None,
        provider: "twilio".into(),
        agent_id: AGENT.into(),
        status: "active".into(),
        inbound_trunk_id: None,
        outbound_trunk_id: Some("ST_out".into()),
        dispatch_rule_id: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        inbound_routing: None,
    }
}

/// The API's 409 for a number registered as `id`.
fn taken(id: &str) -> ApiError {
    ApiError::AlreadyRegistered {
        phone_id: id.into(),
        message: "taken".into(),
    }
}

fn check(generation: i64) -> Checked {
    Checked {
        generation: Some(generation),
        id: "id1".into(),
        at: Instant::now(),
        interval: Some(Duration::from_secs(600)),
        remote: PatchableDigest::of_registration(&reg("id1")),
        secrets: 0,
        dispatched: false,
    }
}

/// Registered as `id1` with a SIP password in Secret `sip` (password `pw`), Ready, status
/// recording the Secret's resourceVersion `rv`.
fn sip_registered(pw: &str, rv: &str) -> Value {
    let mut o = registered();
    if let Some(spec) = o["spec"].as_object_mut() {
        spec.remove("credentialId");
    }
    o["spec"]["providerConfig"] = json!({"trunkAddress": "example.pstn.twilio.com",
        "authUsername": "oneinbox", "authPasswordSecretRef": {"name": "sip"}});
    o["status"]["credentialsHash"] = json!(sip_hash(pw));
    o["status"]["secretVersions"] = json!({"sip": rv});
    o
}

fn sip_credentials(pw: &str) -> Credentials {
    Credentials::Sip {
        trunk_address: "example.pstn.twilio.com".into(),
        auth_username: "oneinbox".into(),
        auth_password: SecretString::new(pw.into()),
    }
}

fn sip_hash(pw: &str) -> String {
    credentials::credentials_hash(&settings().hash_key, "uid-1", &sip_credentials(pw))
}

/// What the Secret watch reports: (name, resourceVersion) of each referenced Secret.
fn watched(pairs: &[(&str, &str)]) -> Option<crate::crd::SecretVersionMap> {
    Some(
        pairs
            .iter()
            .map(|(n, rv)| (n.to_string(), rv.to_string()))
            .collect(),
    )
}

/// A check whose interval is over: the drift check is due.
fn due_check() -> Checked {
    Checked {
        interval: Some(Duration::ZERO),
        ..check(1)
    }
}

fn obs(o: Value) -> Observation {
    let obj: PhoneNumber = serde_json::from_value(o).expect("object");
    // Secrets as after a change of one the object references (or one it stopped knowing):
    // decided at once. The rows of a restart set what the watch reports.
    Observation {
        // The CRD is served as usual; the rows of an uninstall say otherwise.
        definition: Some(Definition::Served),
        ..Observation::of(
            obj,
            ObjectMemory::default(),
            Instant::now(),
            "2026-01-01T00:00:10Z".parse().expect("time"),
        )
    }
}

/// Keys and credentials read, as every pass past the first reads does.
fn read(o: Value) -> Observation {
    let mut ob = obs(o);
    ob.api_key = Some(ApiKey::OperatorWide);
    ob.credentials = Some(Ok(Credentials::Stored {
        credential_id: CRED.into(),
    }));
    ob
}

fn with(mut ob: Observation, f: impl FnOnce(&mut Observation)) -> Observation {
    f(&mut ob);
    ob
}

fn unavailable(status: u16) -> ApiError {
    ApiError::Unavailable {
        what: format!("HTTP {status}"),
        detail: "x".into(),
        retry_after: None,
    }
}

fn key_rejected() -> ApiError {
    ApiError::KeyRejected {
        status: 401,
        detail: "Invalid or missing API key".into(),
    }
}

fn problem(kind: SecretProblemKind) -> SecretProblem {
    SecretProblem {
        kind,
        namespace: "voice".into(),
        name: "sip".into(),
        key: "password".into(),
        keys: match kind {
            SecretProblemKind::NoKey => vec!["pass".into(), "user".into()],
            _ => Vec::new(),
        },
    }
}

/// A one-line summary of a step, for the table.
fn summary(step: &Step) -> String {
    fn phase(p: &Phase) -> String {
        match p {
            Phase::Available => "Available".into(),
            Phase::Progressing { reason, .. } => format!("Progressing({reason})"),
            Phase::Stalled { reason, .. } => format!("Stalled({reason})"),
            Phase::AvailableButStalled { reason, .. } => format!("AvailableButStalled({reason})"),
            Phase::DeletionBlocked { .. } => "DeletionBlocked".into(),
            Phase::Paused => "Paused".into(),
            Phase::Observed { drift } => format!("Observed{drift:?}"),
        }
    }
    match step {
        Step::Read(r) => format!("Read {r:?}"),
        Step::Report { phase: p, then, .. } => {
            let then = match then {
                Then::AwaitChange => "AwaitChange",
                Then::Requeue(_) => "Requeue",
                Then::Continue => "Continue",
                Then::Fail(_) => "Fail",
                Then::Checked {
                    warn_poll_interval: Some(v),
                    ..
                } => return format!("Report {} Checked warn={v}", phase(p)),
                Then::Checked { .. } => "Checked",
            };
            format!("Report {} {then}", phase(p))
        }
        Step::Done(DoneAfter::Failure(f)) => format!("Fail {:?}", f.op),
        Step::Done(DoneAfter::AwaitChange) => "Done AwaitChange".into(),
        Step::Done(DoneAfter::Requeue(_)) => "Done Requeue".into(),
        Step::Adopt { id, takeover } => format!("Adopt {id} takeover={takeover}"),
        Step::ReportLost { id, unmirror } => format!("ReportLost {id} unmirror={unmirror}"),
        Step::Replace { id } => format!("Replace {id}"),
        Step::Register { marker_present, .. } => format!("Register marker={marker_present}"),
        Step::Persist { event, .. } => format!("Persist {}", event.0),
        Step::Patch {
            event: (reason, _), ..
        } => format!("Patch {reason}"),
        Step::Annotate { id } => format!("Annotate {id}"),
        Step::Disown => "Disown".into(),
        Step::Remember { memo, then } => match memo {
            Memo::CleanRefusal { .. } => "RememberCleanRefusal".into(),
            Memo::ForgetCheck => format!("ForgetCheck then {}", summary(then)),
            // A resume always ends the pass.
            Memo::Resumed {
                first_check_in: Some(d),
                ..
            } if **then == Step::Done(DoneAfter::AwaitChange) => {
                format!("Resume first check in {}s", d.as_secs())
            }
            Memo::Resumed { .. } if **then == Step::Done(DoneAfter::AwaitChange) => {
                "Resume no checks".into()
            }
            Memo::Resumed { .. } => format!("Resume then {}", summary(then)),
        },
        Step::Orphan { because, .. } => format!("Orphan ({because})"),
        Step::Deregister { id } => format!("Deregister {id}"),
        Step::Release { released, event } => format!(
            "Release released={} event={}",
            released.is_some(),
            event.as_ref().map(|e| e.0).unwrap_or("-")
        ),
        Step::Blocked { .. } => "Blocked".into(),
    }
}

/// An object whose create crashed after the one write before its POST: the finalizer and the
/// attempt recorded, no status.
fn pending_attempt() -> Value {
    let mut o = object();
    o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
    let attempt = json!({"token": "t1", "startedAt": "2026-01-01T00:00:00Z",
                         "credentialsHash": hash_of(CRED), "uid": "uid-1"});
    o["metadata"]["annotations"] =
        json!({crate::crd::ANNOTATION_REGISTRATION_ATTEMPT: attempt.to_string()});
    o
}

#[test]
fn decision_table() {
    let pending = pending_attempt();
    let stalled_for = |why: &str| {
        let mut o = object();
        o["status"] = json!({"observedGeneration": 1, "credentialsHash": hash_of(CRED),
            "conditions": [condition("Ready", "False", why), condition("Stalled", "True", why)]});
        o
    };
    let annotated = {
        let mut o = object();
        o["metadata"]["annotations"] = json!({ANNOTATION_PHONE_NUMBER_ID: "id9"});
        o
    };
    let deleting = |o: Value| {
        let mut o = o;
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:05Z");
        o
    };
    let said_deleting = |o: Value| {
        let mut o = deleting(o);
        o["status"]["conditions"] = json!([
            condition("Ready", "False", "Deleting"),
            condition("Reconciling", "True", "Deleting")
        ]);
        o
    };
    // Deleting, with the finalizer, an id named only in the annotation.
    let named_deleting = {
        let mut o = deleting(annotated.clone());
        o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
        o["status"] = json!({"conditions": [condition("Ready", "False", "Deleting")]});
        o
    };
    let changed_credentials = |policy: &str| {
        let mut o = registered();
        o["spec"]["credentialId"] = json!(NEW_CRED);
        o["spec"]["replacementPolicy"] = json!(policy);
        with(read(o), |ob| {
            ob.credentials = Some(Ok(Credentials::Stored {
                credential_id: NEW_CRED.into(),
            }));
            ob.fetched = Some(Ok(reg("id1")));
        })
    };
    let team = || crate::crd::AccountId::Namespaced {
        namespace: "ns".into(),
        name: "team".into(),
    };
    let missing_key = |last_known: bool| ApiKey::Missing {
        account: team(),
        problem: problem(SecretProblemKind::Absent),
        last_known,
    };
    let tenant = |o: Value| {
        let mut o = o;
        o["spec"]["accountRef"] = json!({"kind": "OneInboxAccount", "name": "team"});
        o
    };

    // managementPolicy: Observe, no credentials (optional under Observe).
    let observing = |o: Value| {
        let mut o = o;
        o["spec"]["managementPolicy"] = json!("Observe");
        if let Some(spec) = o["spec"].as_object_mut() {
            spec.remove("credentialId");
        }
        o
    };
    // Mirrored under Observe: status holds id1, the annotation too, no finalizer.
    let mirrored = {
        let mut o = observing(registered());
        o["metadata"]["finalizers"] = json!([]);
        o["status"] = json!({
            "observedGeneration": 1, "phoneNumberId": "id1", "state": "active",
            "conditions": [condition("Ready", "True", "Observed")]
        });
        o
    };
    // The mirrored object switched to Full (a new generation), credentials added.
    let taken_over = {
        let mut o = mirrored.clone();
        o["spec"]["managementPolicy"] = json!("Full");
        o["spec"]["credentialId"] = json!(CRED);
        o["metadata"]["generation"] = json!(2);
        o
    };
    let observe_read = |o: Value| with(obs(o), |ob| ob.api_key = Some(ApiKey::OperatorWide));
    // After a restart: nothing in memory, the Secret watch reports `rv` for Secret `sip`.
    let restarted =
        |o: Value, rv: &str| with(obs(o), |ob| ob.secrets.versions = watched(&[("sip", rv)]));
    let resumed = format!(
        "Resume first check in {}s",
        polling::first_check_in("uid-1", Duration::from_secs(600)).as_secs()
    );
    // A due drift check of a SIP object, the key known, the watch reporting `rv`.
    let drift_check = |o: Value, rv: &str| {
        with(obs(o), |ob| {
            ob.api_key = Some(ApiKey::OperatorWide);
            ob.memory.check = Some(due_check());
            ob.secrets.versions = watched(&[("sip", rv)]);
        })
    };

    // An observed object as its pass wrote it: Ready Observed, the registration mirrored.
    let observed_ready = |reason: &str| {
        let mut o = observing(object());
        o["metadata"]["annotations"] = json!({ANNOTATION_PHONE_NUMBER_ID: "id1"});
        o["status"] = json!({"observedGeneration": 1, "phoneNumberId": "id1", "state": "active",
            "conditions": [condition("Ready", "True", reason)]});
        o
    };
    let rows: Vec<(&str, Observation, &str)> = vec![
        // ---- managementPolicy: Observe
        (
            "observe, after a restart, status mirrors an active registration: no GET now",
            obs(observed_ready("Observed")),
            resumed.as_str(),
        ),
        (
            "observe, after a restart, but the spec changed since: look now",
            obs({
                let mut o = observed_ready("Observed");
                o["metadata"]["generation"] = json!(2);
                o
            }),
            "Read ApiKey",
        ),
        (
            "observe, after a restart, a reconcile requested: look now",
            obs({
                let mut o = observed_ready("Observed");
                o["metadata"]["annotations"][ANNOTATION_RECONCILE_REQUESTED_AT] = json!("now");
                o
            }),
            "Read ApiKey",
        ),
        (
            "observe, after a restart, status says another reason: look now",
            obs(observed_ready("Provisioning")),
            "Read ApiKey",
        ),
        (
            "observe, nothing read: the key first, never the credentials",
            obs(observing(object())),
            "Read ApiKey",
        ),
        (
            "observe, no id: look the number up",
            observe_read(observing(object())),
            "Read LookupByNumber",
        ),
        (
            "observe, found by number: record the id in the annotation",
            with(observe_read(observing(object())), |ob| {
                ob.lookup = Some(Ok(Some(reg("id1"))))
            }),
            "Annotate id1",
        ),
        (
            "observe, found by number and annotated in this pass: mirror it, no GET",
            with(
                observe_read({
                    let mut o = observing(object());
                    o["metadata"]["annotations"] = json!({ANNOTATION_PHONE_NUMBER_ID: "id1"});
                    o
                }),
                |ob| ob.lookup = Some(Ok(Some(reg("id1")))),
            ),
            "Report Observed[] Checked",
        ),
        (
            "observe, not registered: Stalled, looked for again at the poll interval",
            with(observe_read(observing(object())), |ob| {
                ob.lookup = Some(Ok(None))
            }),
            "Report Stalled(RegistrationNotFound) Requeue",
        ),
        (
            "observe, a pending attempt of its Full days (finalizer gone): looked up by number",
            observe_read({
                let mut o = observing(pending.clone());
                o["metadata"]["finalizers"] = json!([]);
                o
            }),
            "Read LookupByNumber",
        ),
        (
            "observe, annotated id: GET it",
            observe_read(observing(annotated.clone())),
            "Read Registration(\"id9\")",
        ),
        (
            "observe, annotated id gone: Stalled, never registered",
            with(observe_read(observing(annotated.clone())), |ob| {
                ob.fetched = Some(Err(ApiError::NotFound))
            }),
            "Report Stalled(RegistrationNotFound) AwaitChange",
        ),
        (
            "observe, annotated id of another number",
            with(observe_read(observing(annotated.clone())), |ob| {
                ob.fetched = Some(Ok(reg_of_another_number("id9")));
            }),
            "Report Stalled(IdMismatch) Requeue",
        ),
        (
            "observe, in line: Ready Observed, no drift",
            with(observe_read(mirrored.clone()), |ob| {
                ob.fetched = Some(Ok(reg("id1")))
            }),
            "Report Observed[] Checked",
        ),
        (
            "observe, drift: named by spec field, not corrected",
            with(observe_read(mirrored.clone()), |ob| {
                let mut changed = reg("id1");
                changed.agent_id = OTHER_AGENT.into();
                changed.friendly_name = Some("renamed outside".into());
                ob.fetched = Some(Ok(changed));
            }),
            "Report Observed[\"agentId\", \"friendlyName\"] Checked",
        ),
        (
            "observe, provisioning",
            with(observe_read(mirrored.clone()), |ob| {
                let mut r = reg("id1");
                r.status = "provisioning".into();
                ob.fetched = Some(Ok(r));
            }),
            "Report Progressing(Provisioning) Requeue",
        ),
        (
            "observe, key rejected",
            with(observe_read(mirrored.clone()), |ob| {
                ob.fetched = Some(Err(key_rejected()))
            }),
            "Report Stalled(APIKeyRejected) Fail",
        ),
        (
            "observe, checked recently: no call",
            with(obs(mirrored.clone()), |ob| {
                ob.memory.check = Some(check(1));
            }),
            "Done AwaitChange",
        ),
        (
            "observe, paused",
            obs({
                let mut o = mirrored.clone();
                o["metadata"]["annotations"]["oneinbox.ai/paused"] = json!("true");
                o
            }),
            "Report Paused AwaitChange",
        ),
        (
            "observe, switched from Full: the finalizer goes first",
            obs(observing(registered())),
            "Disown",
        ),
        (
            "observe, duplicate by number: never adopted",
            with(observe_read(observing(object())), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "voice".into(),
                    name: "older".into(),
                    uid: None,
                })
            }),
            "Report Stalled(DuplicatePhoneNumber) Requeue",
        ),
        (
            "observe, duplicate by id: never mirrored",
            with(observe_read(observing(annotated.clone())), |ob| {
                ob.claims.id_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "holder".into(),
                    uid: None,
                })
            }),
            "Report Stalled(DuplicatePhoneNumber) Requeue",
        ),
        (
            "observe, deleted while the finalizer is still on: never deregistered",
            obs(deleting(observing(registered()))),
            "Orphan (managementPolicy is Observe)",
        ),
        (
            "observe, deleted without the finalizer: nothing to do",
            obs(deleting(mirrored.clone())),
            "Done AwaitChange",
        ),
        (
            "switched to Full: the last check is no cached view, GET it",
            with(read(taken_over.clone()), |ob| {
                ob.memory.check = Some(check(1));
            }),
            "Read Registration(\"id1\")",
        ),
        (
            "switched to Full: take over deliberately, finalizer first",
            with(read(taken_over.clone()), |ob| {
                ob.fetched = Some(Ok(reg("id1")))
            }),
            "Adopt id1 takeover=true",
        ),
        (
            "switched to Full, taken over, spec differs: one PATCH",
            with(read(taken_over.clone()), |ob| {
                let mut changed = reg("id1");
                changed.agent_id = OTHER_AGENT.into();
                ob.fetched = Some(Ok(changed));
                ob.last = Outcome::Adopted;
            }),
            "Patch UpdatedOnAdoption",
        ),
        (
            "switched to Full, taken over, in line: Available, the credentials a new baseline",
            with(read(taken_over.clone()), |ob| {
                ob.fetched = Some(Ok(reg("id1")));
                ob.last = Outcome::Adopted;
            }),
            "Report Available Checked",
        ),
        // ---- guards before any read
        (
            "paused",
            obs({
                let mut o = object();
                o["metadata"]["annotations"] = json!({"oneinbox.ai/paused": "true"});
                o
            }),
            "Report Paused AwaitChange",
        ),
        (
            "duplicate by number",
            with(obs(object()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "voice".into(),
                    name: "older".into(),
                    uid: None,
                })
            }),
            "Report Stalled(DuplicatePhoneNumber) Requeue",
        ),
        (
            "duplicate by number, but with its own attempt in flight: look up first",
            with(read(pending.clone()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "voice".into(),
                    name: "older".into(),
                    uid: None,
                })
            }),
            "Read LookupByNumber",
        ),
        (
            "duplicate by id: another object holds it",
            with(obs(annotated.clone()), |ob| {
                ob.claims.id_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "holder".into(),
                    uid: None,
                })
            }),
            "Report Stalled(DuplicatePhoneNumber) Requeue",
        ),
        (
            "names an id, but an older claim holds the number: yield before adopting",
            with(obs(annotated.clone()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "attempting".into(),
                    uid: None,
                })
            }),
            "Report Stalled(DuplicatePhoneNumber) Requeue",
        ),
        (
            "names an id, the older claim only names another id: read its own first",
            with(read(annotated.clone()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "naming".into(),
                    uid: None,
                });
                ob.claims.number_owner_names_another_id = true;
            }),
            "Read Registration(\"id9\")",
        ),
        (
            "names a registration of its number, the older claim only names another id: adopt",
            with(read(annotated.clone()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "naming".into(),
                    uid: None,
                });
                ob.claims.number_owner_names_another_id = true;
                ob.fetched = Some(Ok(reg("id9")));
            }),
            "Adopt id9 takeover=false",
        ),
        (
            "names an id OneInbox does not hold, the older claim only names another: yield",
            with(read(annotated.clone()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "naming".into(),
                    uid: None,
                });
                ob.claims.number_owner_names_another_id = true;
                ob.fetched = Some(Err(ApiError::NotFound));
            }),
            "Report Stalled(DuplicatePhoneNumber) Requeue",
        ),
        (
            "names an id, the older claim only names another, the GET failed: retried",
            with(read(annotated.clone()), |ob| {
                ob.claims.number_owner = Some(ObjectName {
                    namespace: "a".into(),
                    name: "naming".into(),
                    uid: None,
                });
                ob.claims.number_owner_names_another_id = true;
                ob.fetched = Some(Err(unavailable(503)));
            }),
            "Report Progressing(APIUnavailable) Fail",
        ),
        (
            "checked recently, Secrets unchanged: no read, no call",
            with(obs(registered()), |ob| {
                ob.secrets.unchanged = true;
                ob.memory.check = Some(check(1));
            }),
            "Done AwaitChange",
        ),
        (
            "checked recently, but its cluster account no longer allows the namespace: the key next",
            with(obs(registered()), |ob| {
                ob.secrets.unchanged = true;
                ob.memory.check = Some(check(1));
                ob.account.grant_refused = true;
            }),
            "Read ApiKey",
        ),
        // ---- after a restart (nothing in memory): trust a status that records this input
        (
            "restart, status records the generation, id, hash and Secret versions: first check spread over the interval",
            restarted(sip_registered("pw-1", "7"), "7"),
            resumed.as_str(),
        ),
        (
            "restart, stored credential (no Secret): first check spread over the interval",
            with(obs(registered()), |ob| ob.secrets.versions = watched(&[])),
            resumed.as_str(),
        ),
        (
            "restart, poll-interval 0: trusted, never checked",
            restarted(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["metadata"]["annotations"]["oneinbox.ai/poll-interval"] = json!("0");
                    o
                },
                "7",
            ),
            "Resume no checks",
        ),
        (
            "registered in this pass (status and annotation written): a check, not a resume",
            with(restarted(sip_registered("pw-1", "7"), "7"), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.credentials = Some(Ok(sip_credentials("pw-1")));
                ob.secrets_read = vec![("sip".into(), "7".into())];
                ob.last = Outcome::Persisted(reg("id1"));
            }),
            "Report Available Checked",
        ),
        (
            "restart, the password Secret changed while down: reconciled now",
            restarted(sip_registered("pw-1", "7"), "8"),
            "Read ApiKey",
        ),
        (
            "restart, the Secret watch has not listed yet: look again soon, no read",
            with(obs(sip_registered("pw-1", "7")), |ob| {
                ob.secrets.listed = false
            }),
            "Done Requeue",
        ),
        (
            "restart, the Secret is gone (listed, unknown to the watch): reconciled now",
            obs(sip_registered("pw-1", "7")),
            "Read ApiKey",
        ),
        (
            "restart, a spec change while down: reconciled now",
            restarted(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["metadata"]["generation"] = json!(2);
                    o
                },
                "7",
            ),
            "Read ApiKey",
        ),
        (
            "restart, a reconcile requested: reconciled now",
            restarted(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["metadata"]["annotations"][ANNOTATION_RECONCILE_REQUESTED_AT] = json!("t1");
                    o
                },
                "7",
            ),
            "Read ApiKey",
        ),
        (
            "restart, a replacement pending (Stalled): reconciled now",
            restarted(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["status"]["conditions"] = json!([
                        condition("Ready", "True", "Available"),
                        condition("Stalled", "True", "ReplacementRequired")
                    ]);
                    o
                },
                "7",
            ),
            "Read ApiKey",
        ),
        (
            "restart, status without a credentials hash: reconciled now",
            restarted(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["status"]["credentialsHash"] = Value::Null;
                    o
                },
                "7",
            ),
            "Read ApiKey",
        ),
        (
            "restart with another credentials hash key: reconciled now (a new baseline)",
            restarted(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["status"]["credentialsHash"] = json!(credentials::credentials_hash(
                        &credentials::HashKey::derive(b"the key before the restart"),
                        "uid-1",
                        &sip_credentials("pw-1")
                    ));
                    o
                },
                "7",
            ),
            "Read ApiKey",
        ),
        // ---- drift checks and Secret versions
        (
            "drift check, the password Secret at the recorded version: no Secret read, GET",
            drift_check(sip_registered("pw-1", "7"), "7"),
            "Read Registration(\"id1\")",
        ),
        (
            "drift check, the password Secret rotated: read it",
            drift_check(sip_registered("pw-1", "7"), "8"),
            "Read Credentials",
        ),
        (
            "drift check, the Secret as recorded, the registration gone: read it to register",
            with(drift_check(sip_registered("pw-1", "7"), "7"), |ob| {
                ob.fetched = Some(Err(ApiError::NotFound));
                ob.memory.lost = ob.obj.known_id();
            }),
            "Read Credentials",
        ),
        (
            "drift check, the Secret as recorded, a replacement pending (Stalled): read it",
            drift_check(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["status"]["conditions"] = json!([
                        condition("Ready", "True", "Available"),
                        condition("Stalled", "True", "ReplacementRequired")
                    ]);
                    o
                },
                "7",
            ),
            "Read Credentials",
        ),
        (
            "drift check, the Secret as recorded, the hash made with another key: read it",
            drift_check(
                {
                    let mut o = sip_registered("pw-1", "7");
                    o["status"]["credentialsHash"] = json!(credentials::credentials_hash(
                        &credentials::HashKey::derive(b"another key"),
                        "uid-1",
                        &sip_credentials("pw-1")
                    ));
                    o
                },
                "7",
            ),
            "Read Credentials",
        ),
        // ---- reads
        ("nothing read yet", obs(object()), "Read ApiKey"),
        (
            "key known, credentials not read",
            with(obs(object()), |ob| ob.api_key = Some(ApiKey::OperatorWide)),
            "Read Credentials",
        ),
        (
            "account key Secret missing, within the grace period",
            with(obs(tenant(object())), |ob| {
                ob.api_key = Some(missing_key(false))
            }),
            "Report Progressing(SecretNotFound) Requeue",
        ),
        (
            "account not found, within the grace period: wait for it",
            with(obs(tenant(object())), |ob| {
                ob.api_key = Some(ApiKey::Unusable(AccountProblem::NotFound(team())))
            }),
            "Report Progressing(AccountNotFound) Requeue",
        ),
        (
            "account not found, past the grace period",
            with(obs(tenant(stalled_for("AccountNotFound"))), |ob| {
                ob.wall = "2026-01-01T01:00:00Z".parse().expect("time");
                ob.api_key = Some(ApiKey::Unusable(AccountProblem::NotFound(team())));
            }),
            "Report Stalled(AccountNotFound) AwaitChange",
        ),
        (
            "cluster account that does not allow the namespace: Stalled at once",
            with(obs(tenant(object())), |ob| {
                ob.api_key = Some(ApiKey::Unusable(AccountProblem::NotAllowed {
                    account: crate::crd::AccountId::Cluster {
                        name: "voice".into(),
                    },
                    rule: "namespaces labelled team=voice".into(),
                }))
            }),
            "Report Stalled(AccountNotAllowed) AwaitChange",
        ),
        (
            "operator-wide key limited to other namespaces: Stalled at once",
            with(read(object()), |ob| {
                ob.api_key = Some(ApiKey::Unusable(AccountProblem::NotAllowed {
                    account: crate::crd::AccountId::Operator,
                    rule: "namespaces labelled oneinbox.ai/operator-key=allowed".into(),
                }))
            }),
            "Report Stalled(AccountNotAllowed) AwaitChange",
        ),
        (
            "cluster accounts not watched",
            with(obs(tenant(object())), |ob| {
                ob.api_key = Some(ApiKey::Unusable(AccountProblem::ClusterAccountsOff(
                    crate::crd::AccountId::Cluster {
                        name: "voice".into(),
                    },
                )))
            }),
            "Report Stalled(AccountNotReady) AwaitChange",
        ),
        (
            "account's key known: go on",
            with(obs(tenant(object())), |ob| {
                ob.api_key = Some(ApiKey::Account(team()))
            }),
            "Read Credentials",
        ),
        (
            "password key missing in an existing Secret, past the grace period",
            with(read(stalled_for("Creating")), |ob| {
                ob.wall = "2026-01-01T01:00:00Z".parse().expect("time");
                ob.credentials = Some(Err(problem(SecretProblemKind::NoKey)));
            }),
            "Report Stalled(SecretKeyInvalid) AwaitChange",
        ),
        (
            "password empty",
            with(read(object()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Empty)))
            }),
            "Report Progressing(SecretKeyInvalid) Requeue",
        ),
        // ---- create
        ("new object", read(object()), "Register marker=false"),
        (
            "pending marker: look up first",
            read(pending.clone()),
            "Read LookupByNumber",
        ),
        (
            "pending marker, found by number",
            with(read(pending.clone()), |ob| {
                ob.lookup = Some(Ok(Some(reg("id1"))))
            }),
            "Persist Adopted",
        ),
        (
            "pending marker, found one registered before the attempt: someone else's",
            with(read(pending.clone()), |ob| {
                let mut older = reg("id0");
                older.created_at = "2025-12-31T23:00:00Z".into();
                ob.lookup = Some(Ok(Some(older)));
            }),
            "Report Stalled(AlreadyRegistered) Checked",
        ),
        (
            "pending marker, not found",
            with(read(pending.clone()), |ob| ob.lookup = Some(Ok(None))),
            "Register marker=true",
        ),
        (
            "pending marker, Secret missing: the look-up needs no Secret, so it goes first",
            with(read(pending.clone()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Absent)))
            }),
            "Read LookupByNumber",
        ),
        (
            "pending marker, Secret missing, found by number: ours, adopted while waiting",
            with(read(pending.clone()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
                ob.lookup = Some(Ok(Some(reg("id1"))));
            }),
            "Persist Adopted",
        ),
        (
            "pending marker, Secret missing, registered before the attempt: someone else's",
            with(read(pending.clone()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
                let mut older = reg("id0");
                older.created_at = "2025-12-31T23:00:00Z".into();
                ob.lookup = Some(Ok(Some(older)));
            }),
            "Report Stalled(AlreadyRegistered) Checked",
        ),
        (
            "pending marker, Secret missing, look-up failed: retried",
            with(read(pending.clone()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
                ob.lookup = Some(Err(unavailable(503)));
            }),
            "Report Progressing(APIUnavailable) Fail",
        ),
        (
            "pending marker, Secret missing, not registered: wait for the Secret",
            with(read(pending.clone()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
                ob.lookup = Some(Ok(None));
            }),
            "Report Progressing(SecretNotFound) Requeue",
        ),
        (
            "pending marker refused by a clean 429: post again without a look-up",
            with(read(pending.clone()), |ob| {
                ob.memory.clean_refusal = Some("t1".into())
            }),
            "Register marker=true",
        ),
        (
            "posted",
            with(read(object()), |ob| {
                ob.last = Outcome::Posted(Ok(reg("id1")))
            }),
            "Persist Registered",
        ),
        (
            "409 for the attempt's POST: GET the registration in the way",
            with(read(pending.clone()), |ob| {
                ob.last = Outcome::Posted(Err(taken("idX")));
            }),
            "Read Registration(\"idX\")",
        ),
        (
            "409, registered before the attempt started: someone else's",
            with(read(pending.clone()), |ob| {
                ob.last = Outcome::Posted(Err(taken("id0")));
                let mut older = reg("id0");
                older.created_at = "2025-12-31T23:00:00Z".into();
                ob.fetched = Some(Ok(older));
            }),
            "Report Stalled(AlreadyRegistered) Checked",
        ),
        (
            "409, registered since the attempt started (a repeated POST, or another process \
             posting under the same marker): ours, adopted",
            with(read(pending.clone()), |ob| {
                ob.last = Outcome::Posted(Err(taken("id1")));
                ob.fetched = Some(Ok(reg("id1")));
            }),
            "Persist Adopted",
        ),
        (
            "409 for a first POST, registered just before the marker: someone else's (no allowance)",
            with(read(pending.clone()), |ob| {
                ob.last = Outcome::Posted(Err(taken("id0")));
                let mut just_before = reg("id0");
                just_before.created_at = "2025-12-31T23:59:59.500Z".into();
                ob.fetched = Some(Ok(just_before));
            }),
            "Report Stalled(AlreadyRegistered) Checked",
        ),
        (
            "409 after a look-up that found nothing, registered just before the marker: the \
             attempt's (within the clock-skew allowance)",
            with(read(pending.clone()), |ob| {
                ob.lookup = Some(Ok(None));
                ob.last = Outcome::Posted(Err(taken("id0")));
                let mut just_before = reg("id0");
                just_before.created_at = "2025-12-31T23:59:59.500Z".into();
                ob.fetched = Some(Ok(just_before));
            }),
            "Persist Adopted",
        ),
        (
            "409, the GET failed: retried, no write of ids",
            with(read(pending.clone()), |ob| {
                ob.last = Outcome::Posted(Err(taken("id1")));
                ob.fetched = Some(Err(unavailable(503)));
            }),
            "Report Progressing(APIUnavailable) Fail",
        ),
        (
            "names an id this process already found gone: no GET, no second event, register",
            with(read(annotated.clone()), |ob| {
                ob.memory.lost = Some("id9".into())
            }),
            "Register marker=false",
        ),
        (
            "AlreadyRegistered for this input, number looked up within the interval: nothing",
            with(read(stalled_for("AlreadyRegistered")), |ob| {
                ob.memory.check = Some(check(1))
            }),
            "Done AwaitChange",
        ),
        (
            "AlreadyRegistered for this input, interval over (or restarted): look the number up",
            read(stalled_for("AlreadyRegistered")),
            "Read LookupByNumber",
        ),
        (
            "AlreadyRegistered, still registered elsewhere: no POST, next look in one interval",
            with(read(stalled_for("AlreadyRegistered")), |ob| {
                ob.lookup = Some(Ok(Some(reg("id7"))))
            }),
            "Report Stalled(AlreadyRegistered) Checked",
        ),
        (
            "AlreadyRegistered, the number is free now: register",
            with(read(stalled_for("AlreadyRegistered")), |ob| {
                ob.lookup = Some(Ok(None))
            }),
            "Register marker=false",
        ),
        (
            "AlreadyRegistered, the look-up failed: retried by the backoff, no write",
            with(read(stalled_for("AlreadyRegistered")), |ob| {
                ob.lookup = Some(Err(unavailable(503)))
            }),
            "Fail Lookup",
        ),
        (
            "AlreadyRegistered, then reconcile-now: POST again",
            read({
                let mut o = stalled_for("AlreadyRegistered");
                o["metadata"]["annotations"] = json!({"oneinbox.ai/reconcile-requested-at": "now"});
                o
            }),
            "Register marker=false",
        ),
        (
            "AlreadyRegistered, then a spec change: POST again",
            read({
                let mut o = stalled_for("AlreadyRegistered");
                o["metadata"]["generation"] = json!(2);
                o
            }),
            "Register marker=false",
        ),
        (
            "RegistrationRejected for this input: no POST",
            read(stalled_for("RegistrationRejected")),
            "Done AwaitChange",
        ),
        (
            "POST rejected (422)",
            with(read(object()), |ob| {
                ob.last = Outcome::Posted(Err(ApiError::Rejected {
                    status: 422,
                    code: None,
                    detail: "bad".into(),
                }))
            }),
            "Report Stalled(RegistrationRejected) AwaitChange",
        ),
        (
            "POST with a rejected key: not the spec's fault, retried",
            with(read(object()), |ob| {
                ob.last = Outcome::Posted(Err(key_rejected()))
            }),
            "Report Stalled(APIKeyRejected) Fail",
        ),
        (
            "POST throttled (429) with our marker",
            with(read(pending.clone()), |ob| {
                ob.lookup = Some(Ok(None));
                ob.last = Outcome::Posted(Err(unavailable(429)));
            }),
            "RememberCleanRefusal",
        ),
        (
            "POST 503",
            with(read(object()), |ob| {
                ob.last = Outcome::Posted(Err(unavailable(503)))
            }),
            "Report Progressing(APIUnavailable) Fail",
        ),
        // ---- known id
        (
            "annotated id: GET it",
            read(annotated.clone()),
            "Read Registration(\"id9\")",
        ),
        (
            "adopted in this pass, its PATCH rejected: UpdateRejected, not adopted again",
            with(
                read({
                    let mut o = annotated.clone();
                    o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
                    o
                }),
                |ob| {
                    let mut r = reg("id9");
                    r.agent_id = OTHER_AGENT.into();
                    ob.fetched = Some(Ok(r));
                    ob.last = Outcome::Patched {
                        answer: Err(ApiError::Rejected {
                            status: 404,
                            code: None,
                            detail: "agent_id not found".into(),
                        }),
                        registered: None,
                    };
                },
            ),
            "Report Stalled(UpdateRejected) AwaitChange",
        ),
        (
            "annotated id found: adopt deliberately (finalizer first)",
            with(read(annotated.clone()), |ob| {
                ob.fetched = Some(Ok(reg("id9")))
            }),
            "Adopt id9 takeover=false",
        ),
        (
            "adopted: record it",
            with(read(annotated.clone()), |ob| {
                ob.fetched = Some(Ok(reg("id9")));
                ob.last = Outcome::Adopted;
            }),
            "Report Available Checked",
        ),
        (
            "annotated id of another number",
            with(read(annotated.clone()), |ob| {
                ob.fetched = Some(Ok(reg_of_another_number("id9")));
            }),
            "Report Stalled(IdMismatch) Requeue",
        ),
        (
            "registered, in line",
            with(read(registered()), |ob| ob.fetched = Some(Ok(reg("id1")))),
            "Report Available Checked",
        ),
        (
            "registration gone: reported, and the operator's mirror in the annotation goes",
            with(read(registered()), |ob| {
                ob.fetched = Some(Err(ApiError::NotFound))
            }),
            "ReportLost id1 unmirror=true",
        ),
        (
            "an annotated id not found (never held): reported, the user's annotation stays",
            with(read(annotated.clone()), |ob| {
                ob.fetched = Some(Err(ApiError::NotFound))
            }),
            "ReportLost id9 unmirror=false",
        ),
        (
            "registration gone, reported: register again",
            with(read(registered()), |ob| {
                ob.fetched = Some(Err(ApiError::NotFound));
                ob.memory.lost = ob.obj.known_id();
            }),
            "Register marker=false",
        ),
        (
            "gone while a replacement is due: not lost",
            with(changed_credentials("Replace"), |ob| {
                ob.fetched = Some(Err(ApiError::NotFound))
            }),
            "Register marker=false",
        ),
        (
            "credentials changed, Manual",
            changed_credentials("Manual"),
            "Report AvailableButStalled(ReplacementRequired) Checked",
        ),
        (
            "credentials changed, Replace",
            changed_credentials("Replace"),
            "Replace id1",
        ),
        (
            "replaced: register anew",
            with(changed_credentials("Replace"), |ob| {
                ob.last = Outcome::Deregistered(Ok(Deregistered::Released))
            }),
            "Register marker=false",
        ),
        (
            "a spec edited during the pass (the object came back newer): an update, not drift",
            with(read(registered()), |ob| {
                let mut r = reg("id1");
                r.agent_id = OTHER_AGENT.into();
                ob.fetched = Some(Ok(r));
                ob.memory.check = Some(Checked {
                    interval: Some(Duration::ZERO),
                    ..check(1)
                });
                // The pass began at generation 1; a write's answer carried generation 2.
                ob.obj.metadata.generation = Some(2);
            }),
            "Patch Updated",
        ),
        (
            "drift outside the cluster",
            with(read(registered()), |ob| {
                let mut r = reg("id1");
                r.agent_id = OTHER_AGENT.into();
                ob.fetched = Some(Ok(r));
                // Its interval is over: the drift check is due.
                ob.memory.check = Some(Checked {
                    interval: Some(Duration::ZERO),
                    ..check(1)
                });
            }),
            "Patch DriftCorrected",
        ),
        (
            "adopted in this pass, differing from the spec: the adoption's update, not drift",
            with(read(registered()), |ob| {
                let mut r = reg("id1");
                r.agent_id = OTHER_AGENT.into();
                ob.fetched = Some(Ok(r));
                ob.memory.check = Some(due_check());
                ob.last = Outcome::Adopted;
            }),
            "Patch UpdatedOnAdoption",
        ),
        (
            "spec changed",
            with(
                read({
                    let mut o = registered();
                    o["spec"]["agentId"] = json!(OTHER_AGENT);
                    o["metadata"]["generation"] = json!(2);
                    o
                }),
                |ob| {
                    ob.memory.check = Some(check(1));
                },
            ),
            "Patch Updated",
        ),
        (
            "upper-case uuid in the spec, lower case from the API: in line",
            with(
                read({
                    let mut o = registered();
                    o["spec"]["agentId"] = json!(AGENT.to_ascii_uppercase());
                    o
                }),
                |ob| ob.fetched = Some(Ok(reg("id1"))),
            ),
            "Report Available Checked",
        ),
        (
            "PATCH rejected",
            with(
                read({
                    let mut o = registered();
                    o["spec"]["agentId"] = json!(OTHER_AGENT);
                    o
                }),
                |ob| {
                    ob.fetched = Some(Ok(reg("id1")));
                    ob.last = Outcome::Patched {
                        answer: Err(ApiError::Rejected {
                            status: 404,
                            code: None,
                            detail: "agent_id not found".into(),
                        }),
                        registered: None,
                    };
                },
            ),
            "Report Stalled(UpdateRejected) AwaitChange",
        ),
        (
            "PATCH rejected for this spec: not sent again",
            with(
                read({
                    let mut o = registered();
                    o["spec"]["agentId"] = json!(OTHER_AGENT);
                    o["status"]["conditions"] = json!([
                        condition("Ready", "False", "UpdateRejected"),
                        condition("Stalled", "True", "UpdateRejected")
                    ]);
                    o
                }),
                |ob| ob.fetched = Some(Ok(reg("id1"))),
            ),
            "Done AwaitChange",
        ),
        (
            "PATCH found it gone",
            with(
                read({
                    let mut o = registered();
                    o["spec"]["agentId"] = json!(OTHER_AGENT);
                    o
                }),
                |ob| {
                    ob.fetched = Some(Ok(reg("id1")));
                    ob.last = Outcome::Patched {
                        answer: Err(ApiError::NotFound),
                        registered: None,
                    };
                },
            ),
            "ForgetCheck then Done Requeue",
        ),
        (
            "PATCH without an answer",
            with(
                read({
                    let mut o = registered();
                    o["spec"]["agentId"] = json!(OTHER_AGENT);
                    o
                }),
                |ob| {
                    ob.fetched = Some(Ok(reg("id1")));
                    ob.last = Outcome::Patched {
                        answer: Err(unavailable(503)),
                        registered: None,
                    };
                },
            ),
            "ForgetCheck then Report Progressing(APIUnavailable) Fail",
        ),
        (
            "not active yet",
            with(read(registered()), |ob| {
                let mut r = reg("id1");
                r.status = "provisioning".into();
                ob.fetched = Some(Ok(r));
            }),
            "Report Progressing(Provisioning) Requeue",
        ),
        (
            "no id annotation: the status holds the id, nothing to write",
            with(
                read({
                    let mut o = registered();
                    o["metadata"]["annotations"] = json!({});
                    o
                }),
                |ob| ob.fetched = Some(Ok(reg("id1"))),
            ),
            "Report Available Checked",
        ),
        (
            "an id annotation naming another id than the one held: set right",
            with(
                read({
                    let mut o = registered();
                    o["metadata"]["annotations"] = json!({ANNOTATION_PHONE_NUMBER_ID: "id7"});
                    o
                }),
                |ob| ob.fetched = Some(Ok(reg("id1"))),
            ),
            "Annotate id1",
        ),
        (
            "drift check throttled on a Ready object: no write",
            with(read(registered()), |ob| {
                ob.fetched = Some(Err(unavailable(429)))
            }),
            "Fail Get",
        ),
        (
            "drift check 503",
            with(read(registered()), |ob| {
                ob.fetched = Some(Err(unavailable(503)))
            }),
            "Report Progressing(APIUnavailable) Fail",
        ),
        (
            "drift check with a revoked key",
            with(read(registered()), |ob| {
                ob.fetched = Some(Err(key_rejected()))
            }),
            "Report Stalled(APIKeyRejected) Fail",
        ),
        // ---- deletion
        (
            "deleted without a finalizer",
            obs(deleting(object())),
            "Done AwaitChange",
        ),
        (
            "deleted, Orphan",
            obs({
                let mut o = deleting(registered());
                o["spec"]["deletionPolicy"] = json!("Orphan");
                o
            }),
            "Orphan (deletionPolicy is Orphan)",
        ),
        (
            "deleted, no deletionPolicy, its account's default Orphan: orphaned",
            with(obs(deleting(registered())), |ob| {
                ob.account.default_deletion_policy = DeletionPolicy::Orphan
            }),
            "Orphan (deletionPolicy is unset and its account's (or the operator's) default is Orphan)",
        ),
        (
            "deleted, deletionPolicy Delete over a default of Orphan: deregistered (the CRD first)",
            with(
                obs({
                    let mut o = deleting(registered());
                    o["spec"]["deletionPolicy"] = json!("Delete");
                    o
                }),
                |ob| {
                    ob.account.default_deletion_policy = DeletionPolicy::Orphan;
                    ob.definition = None;
                },
            ),
            "Read Definition",
        ),
        (
            "deleted, Delete: the CRD is read first",
            with(obs(deleting(registered())), |ob| ob.definition = None),
            "Read Definition",
        ),
        (
            "deleted while the CRD is being deleted: orphaned, not deregistered",
            with(obs(deleting(registered())), |ob| {
                ob.definition = Some(Definition::Deleting)
            }),
            "Orphan (the PhoneNumber CRD is being deleted)",
        ),
        (
            "deleted while the CRD is being deleted, paused: orphaned (the CRD's deletion waits for no one)",
            with(
                obs({
                    let mut o = deleting(registered());
                    o["metadata"]["annotations"]["oneinbox.ai/paused"] = json!("true");
                    o
                }),
                |ob| ob.definition = Some(Definition::Deleting),
            ),
            "Orphan (the PhoneNumber CRD is being deleted)",
        ),
        (
            "deleted, the CRD unreadable (no RBAC to get it): the policy decides",
            with(obs(deleting(registered())), |ob| {
                ob.definition = Some(Definition::Unreadable)
            }),
            "Report Progressing(Deleting) Continue",
        ),
        (
            "deleted: say Deleting first",
            obs(deleting(registered())),
            "Report Progressing(Deleting) Continue",
        ),
        (
            "deleting: key next",
            obs(said_deleting(registered())),
            "Read ApiKey",
        ),
        (
            "deleting: DELETE",
            with(obs(said_deleting(registered())), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide)
            }),
            "Deregister id1",
        ),
        (
            "deregistered",
            with(obs(said_deleting(registered())), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.last = Outcome::Deregistered(Ok(Deregistered::Released));
            }),
            "Release released=true event=Deregistered",
        ),
        (
            "DELETE failed",
            with(obs(said_deleting(registered())), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.last = Outcome::Deregistered(Err(unavailable(503)));
            }),
            "Blocked",
        ),
        (
            "account key Secret gone, key remembered: DELETE with it",
            with(obs(said_deleting(tenant(registered()))), |ob| {
                ob.api_key = Some(missing_key(true));
            }),
            "Deregister id1",
        ),
        (
            "deleting with an account that no longer allows the namespace: a 404 of the operator-wide key proves nothing",
            with(obs(said_deleting(tenant(registered()))), |ob| {
                ob.api_key = Some(ApiKey::Unusable(AccountProblem::NotAllowed {
                    account: team(),
                    rule: "namespaces named other".into(),
                }));
                ob.last = Outcome::Deregistered(Ok(Deregistered::AlreadyGone));
            }),
            "Blocked",
        ),
        (
            "account key Secret gone, never read: a 404 proves nothing",
            with(obs(said_deleting(tenant(registered()))), |ob| {
                ob.api_key = Some(missing_key(false));
                ob.last = Outcome::Deregistered(Ok(Deregistered::AlreadyGone));
            }),
            "Blocked",
        ),
        (
            "deleting a newcomer that only named another's id: leave it",
            with(
                obs({
                    let mut o = deleting(annotated.clone());
                    o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
                    o["status"] = json!({"conditions": [condition("Ready", "False", "Deleting")]});
                    o
                }),
                |ob| {
                    ob.api_key = Some(ApiKey::OperatorWide);
                    ob.claims.id_owner = Some(ObjectName {
                        namespace: "a".into(),
                        name: "holder".into(),
                        uid: None,
                    });
                },
            ),
            "Release released=false event=NotDeregistered",
        ),
        (
            "deleting, named only in the annotation, an older claim holds the number: leave it",
            with(
                obs({
                    let mut o = deleting(annotated.clone());
                    o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
                    o["status"] = json!({"conditions": [condition("Ready", "False", "Deleting")]});
                    o
                }),
                |ob| {
                    ob.api_key = Some(ApiKey::OperatorWide);
                    ob.claims.number_owner = Some(ObjectName {
                        namespace: "a".into(),
                        name: "attempting".into(),
                        uid: None,
                    });
                },
            ),
            "Release released=false event=NotDeregistered",
        ),
        (
            "deleting, named only in the annotation, the older claim only names another id",
            with(
                obs({
                    let mut o = deleting(annotated.clone());
                    o["metadata"]["finalizers"] = json!([crate::crd::FINALIZER]);
                    o["status"] = json!({"conditions": [condition("Ready", "False", "Deleting")]});
                    o
                }),
                |ob| {
                    ob.api_key = Some(ApiKey::OperatorWide);
                    ob.claims.number_owner = Some(ObjectName {
                        namespace: "a".into(),
                        name: "naming".into(),
                        uid: None,
                    });
                    ob.claims.number_owner_names_another_id = true;
                },
            ),
            "Read Registration(\"id9\")",
        ),
        (
            "deleting, named only in the annotation, the registration is this number's: DELETE",
            with(obs(named_deleting.clone()), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.fetched = Some(Ok(reg("id9")));
            }),
            "Deregister id9",
        ),
        (
            "deleting, named only in the annotation, the registration is another number's: leave it",
            with(obs(named_deleting.clone()), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.fetched = Some(Ok(reg_of_another_number("id9")));
            }),
            "Release released=false event=NotDeregistered",
        ),
        (
            "deleting, named only in the annotation, no such registration: nothing to deregister",
            with(obs(named_deleting.clone()), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.fetched = Some(Err(ApiError::NotFound));
            }),
            "Release released=false event=-",
        ),
        (
            "deleting with a pending marker: look up",
            with(obs(said_deleting(pending.clone())), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide)
            }),
            "Read LookupByNumber",
        ),
        (
            "deleting with a pending marker, found one registered before the attempt: not ours",
            with(obs(said_deleting(pending.clone())), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                let mut older = reg("id0");
                older.created_at = "2025-12-31T23:00:00Z".into();
                ob.lookup = Some(Ok(Some(older)));
            }),
            "Release released=false event=-",
        ),
        (
            "deleting with a pending marker, the user annotated the registration found: adopted",
            with(
                obs(said_deleting({
                    let mut o = pending.clone();
                    o["metadata"]["annotations"][ANNOTATION_PHONE_NUMBER_ID] = json!("id0");
                    o
                })),
                |ob| {
                    ob.api_key = Some(ApiKey::OperatorWide);
                    let mut older = reg("id0");
                    older.created_at = "2025-12-31T23:00:00Z".into();
                    ob.lookup = Some(Ok(Some(older)));
                },
            ),
            "Deregister id0",
        ),
        (
            "deleting with a pending marker, nothing registered",
            with(obs(said_deleting(pending.clone())), |ob| {
                ob.api_key = Some(ApiKey::OperatorWide);
                ob.lookup = Some(Ok(None));
            }),
            "Release released=false event=-",
        ),
    ];

    let mut wrong = Vec::new();
    for (name, ob, want) in &rows {
        let got = summary(&decide(ob, &settings()));
        if got != *want {
            wrong.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[test]
fn a_reconcile_token_longer_than_status_holds_is_handled_once() {
    let token = "t".repeat(2000);
    let mut o = registered();
    o["metadata"]["annotations"]["oneinbox.ai/reconcile-requested-at"] = json!(token);
    // Not handled yet: checked against the API now, and status records it (bounded).
    let step = decide(&read(o.clone()), &settings());
    assert!(
        matches!(step, Step::Read(Read::Registration(_))),
        "{step:?}"
    );
    let step = decide(
        &with(read(o.clone()), |ob| ob.fetched = Some(Ok(reg("id1")))),
        &settings(),
    );
    let Step::Report { data, .. } = step else {
        panic!("{step:?}")
    };
    let recorded = data.last_handled_reconcile_at.expect("recorded");
    assert_eq!(recorded.len(), crate::crd::MAX_RECONCILE_TOKEN);
    // Once recorded, it counts as handled: no call until the next interval.
    o["status"]["lastHandledReconcileAt"] = json!(recorded);
    let step = decide(
        &with(obs(o), |ob| {
            ob.secrets.unchanged = true;
            ob.memory.check = Some(check(1));
        }),
        &settings(),
    );
    assert_eq!(summary(&step), "Done AwaitChange");
}

/// Each PATCH event says what it is: the adoption's update never claims drift from outside.
#[test]
fn a_patch_event_s_note_fits_its_reason() {
    let s = settings();
    let differing = |ob: &mut Observation| {
        let mut r = reg("id1");
        r.agent_id = OTHER_AGENT.into();
        ob.fetched = Some(Ok(r));
        ob.memory.check = Some(due_check());
    };
    let note = |ob: &Observation| match decide(ob, &s) {
        Step::Patch {
            event: (reason, note),
            ..
        } => (reason, note),
        other => panic!("{other:?}"),
    };
    let adopted = with(read(registered()), |ob| {
        differing(ob);
        ob.last = Outcome::Adopted;
    });
    assert_eq!(
        note(&adopted),
        (
            "UpdatedOnAdoption",
            "Brought agent_id of adopted registration id1 in line with the spec".to_owned()
        )
    );
    let drifted = with(read(registered()), |ob| {
        differing(ob);
        ob.memory.check = Some(Checked {
            interval: Some(Duration::ZERO),
            ..check(1)
        });
    });
    let (reason, text) = note(&drifted);
    assert_eq!(reason, "DriftCorrected");
    assert!(text.contains("changed outside the cluster"), "{text}");
}

/// An object on the operator-wide key in a namespace the key does not serve is told the rule,
/// the label to add and the other way (an account), never "ask for an allowedNamespaces".
#[test]
fn the_operator_key_s_refusal_names_the_label_and_the_flag() {
    let problem = AccountProblem::NotAllowed {
        account: crate::crd::AccountId::Operator,
        rule: "namespaces labelled oneinbox.ai/operator-key=allowed".into(),
    };
    let message = super::account_problem_text(&problem);
    for wanted in [
        "operator-wide API key does not serve this namespace",
        "namespaces labelled oneinbox.ai/operator-key=allowed",
        "--operator-key-namespaces",
        "operatorKey.namespaces",
        "kubectl label namespace",
        "spec.accountRef",
    ] {
        assert!(message.contains(wanted), "{wanted}: {message}");
    }
    assert!(!message.contains("allowedNamespaces"), "{message}");
}

#[test]
fn messages_give_the_fix_that_fits() {
    let s = settings();
    let step = decide(
        &with(read(object()), |ob| {
            ob.credentials = Some(Err(problem(SecretProblemKind::NoKey)))
        }),
        &s,
    );
    let Step::Report {
        phase: Phase::Progressing { message, .. },
        ..
    } = step
    else {
        panic!("{step:?}")
    };
    assert!(message.contains("has no key \"password\""), "{message}");
    assert!(
        message.contains("kubectl -n voice patch secret sip"),
        "{message}"
    );
    assert!(
        message.contains(
            "or set spec.providerConfig.authPasswordSecretRef.key to the key that holds it (it has pass, user)"
        ),
        "{message}"
    );
    assert!(!message.contains("create secret"), "{message}");

    let step = decide(
        &with(read(object()), |ob| {
            ob.last = Outcome::Posted(Err(key_rejected()))
        }),
        &s,
    );
    let Step::Report {
        phase: Phase::Stalled { message, .. },
        ..
    } = step
    else {
        panic!("{step:?}")
    };
    assert!(!message.contains("Fix the spec"), "{message}");
    assert!(message.contains("operator's API key"), "{message}");
}

#[test]
fn a_registration_found_gone_while_the_secret_is_missing_leaves_status_naming_nothing() {
    let step = decide(
        &with(read(registered()), |ob| {
            ob.fetched = Some(Err(ApiError::NotFound));
            ob.memory.lost = ob.obj.known_id();
            ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
        }),
        &settings(),
    );
    let Step::Report { data, phase, .. } = &step else {
        panic!("{step:?}")
    };
    assert_eq!(summary(&step), "Report Progressing(SecretNotFound) Requeue");
    assert!(matches!(phase, Phase::Progressing { .. }));
    assert_eq!(
        data.remote.phone_number_id, None,
        "status must not name a registration that is gone"
    );
    // A Secret missing while the registration exists leaves the id where it is.
    let step = decide(
        &with(read(registered()), |ob| {
            ob.fetched = Some(Ok(reg("id1")));
            ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
        }),
        &settings(),
    );
    if let Step::Report { data, .. } = &step {
        assert_eq!(
            data.remote.phone_number_id.as_deref(),
            Some("id1"),
            "{step:?}"
        );
    }
}

#[test]
fn an_attempt_settled_while_the_secret_is_missing_drops_its_marker() {
    let o = pending_attempt();
    let waiting = |lookup: Option<Result<Option<Registration>, ApiError>>, refused: bool| {
        decide(
            &with(read(o.clone()), |ob| {
                ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
                ob.lookup = lookup;
                if refused {
                    ob.memory.clean_refusal = Some("t1".into());
                }
            }),
            &settings(),
        )
    };
    // Nothing registered, or refused by a clean 429: nothing is in flight, so the object no
    // longer claims the number with an attempt while it waits for its Secret.
    for step in [waiting(Some(Ok(None)), false), waiting(None, true)] {
        let Step::Report { data, .. } = &step else {
            panic!("{step:?}")
        };
        assert_eq!(summary(&step), "Report Progressing(SecretNotFound) Requeue");
        assert_eq!(data.pending_create, None, "{step:?}");
    }
    // Found its own: recorded with the hash of the credentials it posted.
    let step = waiting(Some(Ok(Some(reg("id1")))), false);
    let Step::Persist { data, .. } = &step else {
        panic!("{step:?}")
    };
    assert_eq!(
        data.credentials_hash.as_deref(),
        Some(hash_of(CRED).as_str())
    );
    // Restored (or copied) without its status: another UID, so the attempt's hash (keyed by
    // the old UID) is not taken for this object's; adopted without a baseline, which the next
    // pass with the Secret records (never a replacement).
    let mut restored = o.clone();
    restored["metadata"]["uid"] = json!("uid-restored");
    let step = decide(
        &with(read(restored), |ob| {
            ob.credentials = Some(Err(problem(SecretProblemKind::Absent)));
            ob.lookup = Some(Ok(Some(reg("id1"))));
        }),
        &settings(),
    );
    let Step::Persist { data, .. } = &step else {
        panic!("{step:?}")
    };
    assert_eq!(
        data.credentials_hash, None,
        "the old UID's hash is not this object's"
    );
}

#[test]
fn a_check_records_the_secret_versions_it_used() {
    // Not read (as recorded): the hash and the versions stay, so the status is unchanged.
    let ob = with(
        {
            let mut ob = obs(sip_registered("pw-1", "7"));
            ob.api_key = Some(ApiKey::OperatorWide);
            ob.memory.check = Some(due_check());
            ob.secrets.versions = watched(&[("sip", "7")]);
            ob
        },
        |ob| ob.fetched = Some(Ok(reg("id1"))),
    );
    let Step::Report { data, phase, then } = decide(&ob, &settings()) else {
        panic!("a report")
    };
    assert_eq!(phase, Phase::Available);
    assert!(matches!(then, Then::Checked { .. }), "{then:?}");
    assert_eq!(data.credentials_hash, Some(sip_hash("pw-1")));
    assert_eq!(
        data.secret_versions,
        watched(&[("sip", "7")]).unwrap_or_default()
    );

    // Rotated and read: the new version is recorded, the registered hash kept, and the
    // replacement reported (Manual).
    let ob = with(obs(sip_registered("pw-1", "7")), |ob| {
        ob.api_key = Some(ApiKey::OperatorWide);
        ob.memory.check = Some(due_check());
        ob.secrets.versions = watched(&[("sip", "8")]);
        ob.secrets_read = vec![("sip".into(), "8".into())];
        ob.credentials = Some(Ok(sip_credentials("pw-2")));
        ob.fetched = Some(Ok(reg("id1")));
    });
    let Step::Report { data, phase, .. } = decide(&ob, &settings()) else {
        panic!("a report")
    };
    assert!(
        matches!(phase, Phase::AvailableButStalled { reason, .. } if reason == reason::REPLACEMENT_REQUIRED),
        "{phase:?}"
    );
    assert_eq!(data.credentials_hash, Some(sip_hash("pw-1")));
    assert_eq!(
        data.secret_versions,
        watched(&[("sip", "8")]).unwrap_or_default()
    );
}

#[test]
fn without_the_secret_watch_every_check_reads_and_a_restart_trusts_the_status() {
    let get_only = Settings {
        secret_access: crate::secrets::SecretAccess::Get,
        ..settings()
    };
    // Nothing reports a rotation: the check reads the password.
    let ob = with(obs(sip_registered("pw-1", "7")), |ob| {
        ob.api_key = Some(ApiKey::OperatorWide);
        ob.memory.check = Some(due_check());
        ob.secrets.versions = watched(&[("sip", "7")]);
    });
    assert_eq!(summary(&decide(&ob, &get_only)), "Read Credentials");
    // After a restart the first check is spread all the same (a change is seen at a check).
    let ob = obs(sip_registered("pw-1", "7"));
    assert_eq!(
        summary(&decide(&ob, &get_only)),
        format!(
            "Resume first check in {}s",
            polling::first_check_in("uid-1", Duration::from_secs(600)).as_secs()
        )
    );
}

#[test]
fn waiting_for_an_accounts_key_secret_names_the_account_and_not_for_a_password() {
    let message = |ob: Observation| match decide(&ob, &settings()) {
        Step::Report {
            phase: Phase::Progressing { message, .. },
            ..
        } => message,
        step => panic!("{step:?}"),
    };
    let key_missing = message(with(obs(object()), |ob| {
        ob.api_key = Some(ApiKey::Missing {
            account: AccountId::Namespaced {
                namespace: "voice".into(),
                name: "team".into(),
            },
            problem: problem(SecretProblemKind::Absent),
            last_known: false,
        })
    }));
    assert!(
        key_missing.starts_with(
            "the API key of OneInboxAccount voice/team (the account's apiKeySecretRef): Secret voice/sip does not exist"
        ),
        "{key_missing}"
    );
    let password_missing = message(with(read(object()), |ob| {
        ob.credentials = Some(Err(problem(SecretProblemKind::Absent)))
    }));
    assert!(
        password_missing.starts_with("Secret voice/sip does not exist"),
        "{password_missing}"
    );
}

/// Registering again (the registration is gone) writes the status without the old ids before
/// the attempt; a first registration writes no status before its POST.
#[test]
fn registering_again_drops_the_old_ids_first() {
    let first = decide(&read(object()), &settings());
    assert!(
        matches!(
            first,
            Step::Register {
                drop_old_ids: None,
                ..
            }
        ),
        "{}",
        summary(&first)
    );
    let again = with(read(registered()), |ob| ob.memory.lost = Some("id1".into()));
    let Step::Register {
        drop_old_ids: Some(reset),
        marker_present: false,
        ..
    } = decide(&again, &settings())
    else {
        panic!("{}", summary(&decide(&again, &settings())));
    };
    let (data, phase) = *reset;
    assert_eq!(data.remote.phone_number_id, None);
    assert_eq!(data.credentials_hash, Some(hash_of(CRED)));
    assert!(
        matches!(
            phase,
            Phase::Progressing {
                reason: reason::CREATING,
                ..
            }
        ),
        "{phase:?}"
    );
}
