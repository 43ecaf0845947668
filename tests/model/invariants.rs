//! The invariants checked after a case has healed (and, for b-Orphan, c and g, while it runs).
//!
//! (a) every live object that nothing justifies stalling has exactly one registration of its
//!     number, it is the one its status names, and its PATCHable fields match the spec;
//! (b) a removed object with `deletionPolicy: Delete` leaves no registration it owned (unless it
//!     never held one: its status never named one and no adoption of it was confirmed), one
//!     with Orphan leaves the registration it held;
//! (c) no PATCH or DELETE of a registration the object neither created nor deliberately adopted
//!     (checked at every call, `oneinbox.rs`);
//! (d) no object is left terminating, unless its account cannot be used (gone, or it does not
//!     allow the namespace) and it says `DeletionBlocked`: only a human can help then;
//! (e) status tells the truth: the id it names exists, belongs to the object, is for its number
//!     and no other id is in the annotation, and no registration attempt is left unsettled; Ready is True exactly when the registration matches the
//!     spec and is active, and otherwise gives a reason that the world justifies;
//!     observedGeneration (status and conditions) is the object's generation;
//! (f) OneInbox calls and Kubernetes writes per object in any simulated minute stay under
//!     `BOUND_BASE + BOUND_PER_STIMULUS × stimuli` (the stimuli of the minute before and during
//!     the window), a step settles within `MAX_PASSES_PER_STEP` passes, and the healed world
//!     goes quiet (drift checks then cost no write and no change);
//! (g) no secret value (password, API key) in any status, annotation, event, Kubernetes write,
//!     returned error or captured log line;
//! (h) an object whose status names a registration carries the finalizer (checked at every
//!     write by the operator), unless `managementPolicy: Observe`;
//! (i) a pass that starts under `managementPolicy: Observe` sends no POST, PATCH or DELETE
//!     (checked at every call, `oneinbox.rs`), and an object deleted under Observe leaves its
//!     registration (the Orphan half of b);
//! (j) a pass calls OneInbox only with its object's account's key (a deletion may fall back to
//!     the operator-wide key), and never with the key of an account that did not exist or did
//!     not allow the object's namespace when the pass began (checked at every call,
//!     `oneinbox.rs`);
//! (k) while one workspace answers every call with 429 (or 401), the objects of the other
//!     accounts converge on their own: (a) and (e) hold for them before that storm ends.
//!
//! Registrations are per workspace: an object's registrations, claimants and rivals are those
//! of its account's workspace.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::oneinbox::patchable;
use crate::world::World;

pub const BOUND_BASE: usize = 12;
pub const BOUND_PER_STIMULUS: usize = 8;
const WINDOW_MS: u64 = 60_000;

fn name(key: &(String, String)) -> String {
    format!("{}/{}", key.0, key.1)
}

fn condition<'a>(obj: &'a Value, t: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(t))
}

fn spec_patchable(spec: &Value) -> Value {
    let lower = |v: &Value| v.as_str().map(str::to_ascii_lowercase);
    let r = &spec["inboundRouting"];
    let mut routing = serde_json::Map::new();
    if let Some(a) = lower(&r["agentId"]) {
        routing.insert("agent_id".into(), json!(a));
    }
    if let Some(a) = lower(&r["fallback"]["agentId"]) {
        routing.insert("fallback".into(), json!({"agent_id": a}));
    }
    if let Some(m) = r["voicemailMessage"].as_str() {
        routing.insert("voicemail_message".into(), json!(m));
    }
    json!({
        "friendly_name": spec["friendlyName"],
        "agent_id": lower(&spec["agentId"]),
        "routing": if routing.is_empty() { Value::Null } else { Value::Object(routing) },
    })
}

impl World {
    pub fn entitled(&self, uid: &str, id: &str) -> bool {
        self.api
            .regs
            .get(id)
            .is_some_and(|r| r.owner.as_deref() == Some(uid) || r.claimants.contains(uid))
    }

    /// (b), Orphan half: checked when the object goes.
    pub fn check_orphan_left_its_registration(&mut self, uid: &str, obj: &Value) {
        let held = obj["status"]["phoneNumberId"]
            .as_str()
            .or(obj["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str());
        let Some(held) = held else { return };
        let deleted_by_its_cleanup = self.api.deleted.iter().any(|(id, by, orphan_cleanup)| {
            id == held && by.as_deref() == Some(uid) && *orphan_cleanup
        });
        if deleted_by_its_cleanup {
            let who = format!(
                "{}/{}",
                obj["metadata"]["namespace"].as_str().unwrap_or(""),
                obj["metadata"]["name"].as_str().unwrap_or("")
            );
            self.violations.push(format!(
                "(b) {who} was deleted with deletionPolicy Orphan, but its deletion deregistered {held}"
            ));
        }
    }

    /// (h), checked at every write of an object that stays: an object whose status names a
    /// registration carries the finalizer (so its deletion waits for the operator), unless
    /// `managementPolicy: Observe` says the operator never deregisters it.
    pub fn check_held_with_finalizer(&mut self, key: &(String, String), obj: &Value, gone: bool) {
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(id) = obj["status"]["phoneNumberId"].as_str() else {
            return;
        };
        self.status_named
            .entry(uid.clone())
            .or_default()
            .insert(id.to_owned());
        let finalized = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == oneinbox_operator::crd::FINALIZER));
        if finalized || crate::driver::observed(obj) {
            self.takeover_pending.remove(&uid);
        }
        // A user's write (a switch from Observe to Full) cannot add it. Until the takeover,
        // a failure may be reported first (the registration must be read to be taken over),
        // but never Ready.
        let ready = obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let taking_over = self.takeover_pending.contains(&uid) && !ready;
        // A registration gone from OneInbox cannot be left behind: a status that still names
        // one (an observer switched back to Full whose registration was deleted outside, until
        // its status is written) is not a leak.
        let exists = self.api.regs.contains_key(id);
        if !gone
            && !finalized
            && !self.user_writing
            && !taking_over
            && exists
            && !crate::driver::observed(obj)
        {
            self.violations.push(format!(
                "(h) {}: status names {id}, but the object does not carry the finalizer",
                name(key)
            ));
        }
    }

    /// Every invariant on the healed world. `texts` are further strings to scan for secrets.
    pub fn final_checks(&self, texts: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        // (d)
        for (key, s) in &self.objects {
            if !s.obj["metadata"]["deletionTimestamp"].is_null() && !self.blocked_for_good(&s.obj) {
                v.push(format!(
                    "(d) {} is still terminating after healing (finalizers {})",
                    name(key),
                    s.obj["metadata"]["finalizers"]
                ));
            }
        }
        // (b), Delete half. Excused only: an object that never held a registration (an
        // adoption named in its annotation and never carried out).
        for r in &self.removed {
            if r.orphan || !r.held {
                continue;
            }
            for reg in self.api.regs.values() {
                if reg.owner.as_deref() == Some(r.uid.as_str()) {
                    v.push(format!(
                        "(b) {} was deleted with deletionPolicy Delete, but its registration {} remains ({})",
                        name(&r.key),
                        reg.reg.id,
                        if r.finalized { "it had the finalizer" } else { "it went without the finalizer" }
                    ));
                }
            }
        }
        for (key, s) in &self.objects {
            if s.obj["metadata"]["deletionTimestamp"].is_null() {
                self.check_live(key, &s.obj, &mut v);
            }
        }
        // (g)
        let mut haystacks: Vec<&str> = texts.to_vec();
        haystacks.extend(self.write_bodies.iter().map(String::as_str));
        let events: Vec<String> = self.events.iter().map(Value::to_string).collect();
        haystacks.extend(events.iter().map(String::as_str));
        let objects: Vec<String> = self.objects.values().map(|s| s.obj.to_string()).collect();
        haystacks.extend(objects.iter().map(String::as_str));
        for secret in &self.secret_values {
            if let Some(h) = haystacks.iter().find(|h| h.contains(secret.as_str())) {
                // Show what precedes it, never the value itself.
                let at = h.find(secret.as_str()).unwrap_or(0);
                let mut from = at.saturating_sub(80);
                while !h.is_char_boundary(from) {
                    from += 1;
                }
                v.push(format!(
                    "(g) a secret value appears in output, after: …{}",
                    &h[from..at]
                ));
            }
        }
        v.extend(self.check_bounds());
        v.extend(self.check_poll_intervals());
        v
    }

    /// (f), the drift checks: in the healed world's quiet window, a settled Ready object is
    /// read (one GET per check) at its interval: the `oneinbox.ai/poll-interval` annotation
    /// clamped to the 30 s floor, or the default 10 min when it is absent or invalid, each
    /// interval jittered by ±20 %; one whose annotation is invalid has had an
    /// `InvalidPollInterval` Warning.
    fn check_poll_intervals(&self) -> Vec<String> {
        let mut v = Vec::new();
        let Some((from, to)) = self.quiet_window else {
            return v;
        };
        for (key, s) in &self.objects {
            let obj = &s.obj;
            let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
            let annotation = obj["metadata"]["annotations"]["oneinbox.ai/poll-interval"].as_str();
            let parsed = annotation.map(oneinbox_operator::config::parse_duration);
            let settled = condition(obj, "Ready").is_some_and(|c| c["status"] == "True")
                && condition(obj, "Stalled").is_none_or(|c| c["status"] != "True")
                && condition(obj, "Reconciling").is_none_or(|c| c["status"] != "True");
            if !settled {
                continue;
            }
            // Checked in the window, so its interval was looked at.
            // Unless one of its Events was lost (best effort, not posted again).
            if let (Some(a), Some(Err(_))) = (annotation, &parsed)
                && !self.events_lost.contains(uid)
            {
                let warned = self.events.iter().any(|e| {
                    e["reason"] == "InvalidPollInterval"
                        && (e["regarding"]["uid"] == uid || e["involvedObject"]["uid"] == uid)
                });
                if !warned {
                    v.push(format!(
                        "(f) {}: poll-interval {a:?} is invalid, but no InvalidPollInterval Warning was posted",
                        name(key)
                    ));
                }
            }
            let interval_ms = match parsed {
                Some(Ok(d)) => d.max(std::time::Duration::from_secs(30)).as_millis() as u64,
                _ => 600_000,
            };
            let reads: Vec<u64> = self
                .log
                .iter()
                .filter(|(at, u, k)| *at >= from && *at <= to && u == uid && *k == "get")
                .map(|(at, _, _)| *at)
                .collect();
            // The first check in the window may still follow an interval drawn before it;
            // from there on, the object's own interval.
            let Some(first) = reads.first() else {
                v.push(format!(
                    "(f) {}: no drift check in {:.0} quiet seconds",
                    name(key),
                    (to - from) as f64 / 1000.0
                ));
                continue;
            };
            let span = to - first;
            let intervals = reads.len() as u64 - 1;
            let most = span * 10 / (interval_ms * 8) + 1;
            let least = (span * 10 / (interval_ms * 12)).saturating_sub(1);
            if intervals > most || intervals < least {
                v.push(format!(
                    "(f) {}: {intervals} drift-check intervals in {:.0} quiet seconds, with an interval of {} s (poll-interval {annotation:?}) between {least} and {most} are expected",
                    name(key),
                    span as f64 / 1000.0,
                    interval_ms / 1000
                ));
            }
        }
        v
    }

    /// (k): (a) and (e) for the live objects of every workspace but `storming`, while it
    /// still answers `code` to every call.
    pub fn isolation_checks(&self, storming: &str, code: u16) -> Vec<String> {
        let mut v = Vec::new();
        for (key, s) in &self.objects {
            if s.obj["metadata"]["deletionTimestamp"].is_null()
                && crate::world::ws_of(&s.obj) != storming
            {
                self.check_live(key, &s.obj, &mut v);
            }
        }
        v.into_iter()
            .map(|l| format!("(k) while workspace {storming} answered {code} to every call: {l}"))
            .collect()
    }

    /// A deletion that only a human can unblock: the object's account cannot be used (gone, or
    /// it does not allow the namespace) and it says `DeletionBlocked` (its retries are not
    /// waited for when the world heals).
    pub fn blocked_for_good(&self, obj: &Value) -> bool {
        !obj["metadata"]["deletionTimestamp"].is_null()
            && !self.account_usable(obj)
            && obj["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "DeletionBlocked")
    }

    /// Why the object's account cannot be used now, as the operator reports it.
    fn account_problem(&self, obj: &Value) -> Option<&'static str> {
        match crate::world::account_of(obj) {
            Err(()) => Some("AccountNotFound"),
            Ok(Some(a)) if !self.accounts.contains_key(&a) => Some("AccountNotFound"),
            _ if !self.account_usable(obj) => Some("AccountNotAllowed"),
            _ => None,
        }
    }

    fn check_live(&self, key: &(String, String), obj: &Value, v: &mut Vec<String>) {
        let who = name(key);
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        let spec = &obj["spec"];
        let number = spec["phoneNumber"].as_str().unwrap_or_default();
        let generation = &obj["metadata"]["generation"];
        let ws = crate::world::ws_of(obj);
        let account_problem = self.account_problem(obj);
        let regs = self.api.of_number(&ws, number);
        let mine: Vec<_> = regs
            .iter()
            .filter(|r| self.entitled(uid, &r.reg.id))
            .collect();
        let status = &obj["status"];
        if !status.is_object() {
            v.push(format!("(e) {who} has no status after healing"));
            return;
        }
        if status["observedGeneration"] != *generation {
            v.push(format!(
                "(e) {who}: status.observedGeneration {} but generation {generation}",
                status["observedGeneration"]
            ));
        }
        for c in status["conditions"].as_array().into_iter().flatten() {
            if c["observedGeneration"] != *generation {
                v.push(format!(
                    "(e) {who}: condition {} has observedGeneration {} but generation {generation}",
                    c["type"], c["observedGeneration"]
                ));
            }
        }
        if crate::driver::observed(obj) {
            self.check_observed(key, obj, v);
            return;
        }
        let held = status["phoneNumberId"].as_str();
        let annotation = obj["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str();
        // A PATCH refused for the spec (an unknown agent): the object waits for a change of
        // the spec and reads nothing, so what status mirrors may go stale (even gone).
        // So does an object whose account cannot be used: it sends nothing.
        let refused = (crate::driver::names_unknown_agent(&obj["spec"])
            && condition(obj, "Stalled")
                .is_some_and(|c| c["status"] == "True" && c["reason"] == "UpdateRejected"))
            || account_problem.is_some();
        if let Some(id) = held {
            match self.api.get_in(&ws, id) {
                None if refused => {}
                None => v.push(format!(
                    "(e) {who}: status names {id}, which OneInbox does not hold"
                )),
                Some(r) => {
                    if !self.entitled(uid, id) {
                        v.push(format!(
                            "(e) {who}: status names {id}, a registration it neither created nor deliberately adopted"
                        ));
                    }
                    if r.reg.phone_number != number {
                        v.push(format!(
                            "(e) {who}: status names {id}, which is for {}",
                            r.reg.phone_number
                        ));
                    }
                    // The ids OneInbox may re-provision outside: mirrored as the API holds them
                    // (unless refused, above).
                    for (field, api) in [
                        ("inboundTrunkId", &r.reg.inbound_trunk_id),
                        ("outboundTrunkId", &r.reg.outbound_trunk_id),
                        ("dispatchRuleId", &r.reg.dispatch_rule_id),
                    ] {
                        if status[field].as_str() != api.as_deref() && !refused {
                            v.push(format!(
                                "(e) {who}: status.{field} {} but OneInbox says {api:?}",
                                status[field]
                            ));
                        }
                    }
                    if status["state"].as_str() != Some(r.reg.status.as_str()) && !refused {
                        v.push(format!(
                            "(e) {who}: status.state {} but OneInbox says {}",
                            status["state"], r.reg.status
                        ));
                    }
                }
            }
            // The annotation is input (adoption, restore); one that names another id is set
            // right. A create writes none: the status alone holds the id.
            if annotation.is_some_and(|a| a != id) && !refused {
                v.push(format!(
                    "(e) {who}: status names {id} but the annotation says {annotation:?}"
                ));
            }
            if crate::world::attempt_in_flight(obj).is_some() {
                v.push(format!(
                    "(e) {who}: status names {id} with a registration attempt still unsettled"
                ));
            }
        }
        let ready = condition(obj, "Ready");
        let ready_true = ready.is_some_and(|c| c["status"] == "True");
        let ready_reason = ready.and_then(|c| c["reason"].as_str()).unwrap_or("");
        let stalled = condition(obj, "Stalled")
            .filter(|c| c["status"] == "True")
            .and_then(|c| c["reason"].as_str());

        // What, if anything, justifies this object not being Ready.
        let mut excuses: Vec<&str> = Vec::new();
        let mut needs_stall = false;
        // The account does not exist (waited for, then Stalled) or does not allow the
        // namespace (Stalled at once).
        if let Some(p) = account_problem {
            needs_stall = true;
            excuses.push(p);
        }
        let secret = spec["providerConfig"]["authPasswordSecretRef"]["name"]
            .as_str()
            .map(|s| self.secrets.get(&(key.0.clone(), s.to_owned())));
        match secret {
            Some(None) => excuses.push("SecretNotFound"),
            // There without the key, or with an empty (or blank) value.
            Some(Some((_, d))) if d.get("password").is_none_or(|p| p.trim().is_empty()) => {
                excuses.push("SecretKeyInvalid")
            }
            _ => {}
        }
        // OneInbox refuses a POST or PATCH naming an agent it does not know (404), for good.
        if crate::driver::names_unknown_agent(spec) {
            needs_stall = true;
            excuses.extend(["RegistrationRejected", "UpdateRejected"]);
        }
        // OneInbox reports that provisioning failed: only a human can help.
        if mine.iter().any(|r| r.reg.status == "failed") {
            needs_stall = true;
            excuses.push("RegistrationFailed");
        }
        if let Some(a) = annotation
            && held != Some(a)
            && let Some(r) = self.api.get_in(&ws, a)
        {
            // Held by another live object: refused by id before it is ever fetched.
            let held_elsewhere = self
                .objects
                .iter()
                .any(|(k, o)| k != key && o.obj["status"]["phoneNumberId"].as_str() == Some(a));
            if held_elsewhere {
                excuses.push("DuplicatePhoneNumber");
            }
            if r.reg.phone_number != number {
                needs_stall = true;
                excuses.push("IdMismatch");
            } else if !self.entitled(uid, a) {
                needs_stall = true;
                excuses.push("*");
            }
        }
        // Two objects claim the number: the one entitled to its registration, else the
        // one with the strongest claim, else the oldest, owns it.
        let claimants: Vec<(&(String, String), &Value)> = self
            .objects
            .iter()
            .filter(|(_, s)| {
                s.obj["spec"]["phoneNumber"].as_str() == Some(number)
                    && crate::world::ws_of(&s.obj) == ws
            })
            .map(|(k, s)| (k, &s.obj))
            .collect();
        // A claimant whose PATCH is refused for its spec reads nothing until the spec changes,
        // and its status may name a registration gone since: it still claims the number.
        // So does an observer whose registration is gone (Stalled `RegistrationNotFound`): it
        // keeps naming it, and so keeps its claim on the number.
        let stale_claim = claimants.iter().any(|(k, o)| {
            let stalled = |why: &str| {
                condition(o, "Stalled").is_some_and(|c| c["status"] == "True" && c["reason"] == why)
            };
            *k != key
                && ((o["status"]["phoneNumberId"].is_string()
                    && crate::driver::names_unknown_agent(&o["spec"])
                    && stalled("UpdateRejected"))
                    || (crate::driver::observed(o) && stalled("RegistrationNotFound")))
        });
        if stale_claim {
            needs_stall = true;
            excuses.push("DuplicatePhoneNumber");
        }
        if claimants.len() > 1 {
            // The one whose status names a registration of the number it is entitled to;
            // else the one that created or deliberately adopted one (merely claimable ones,
            // made near its attempt, do not count until it takes them).
            let uid_of = |o: &Value| o["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            let holding = claimants.iter().find(|(_, o)| {
                o["status"]["phoneNumberId"].as_str().is_some_and(|h| {
                    regs.iter()
                        .any(|r| r.reg.id == h && self.entitled(&uid_of(o), h))
                })
            });
            let holder = holding.or_else(|| {
                claimants.iter().find(|(_, o)| {
                    regs.iter()
                        .any(|r| r.owner.as_deref() == Some(uid_of(o).as_str()))
                })
            });
            // Else the documented order: one that names an id (the annotation) or has an
            // attempt in flight wins over one that has neither, and then the oldest.
            let owner = holder.map(|(k, _)| (*k).clone()).or_else(|| {
                claimants
                    .iter()
                    .min_by_key(|(k, o)| {
                        let claims = !o["metadata"]["annotations"]["oneinbox.ai/phone-number-id"]
                            .is_null()
                            || crate::world::attempt_in_flight(o).is_some();
                        (
                            !claims,
                            o["metadata"]["creationTimestamp"]
                                .as_str()
                                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
                            (*k).clone(),
                        )
                    })
                    .map(|(k, _)| (*k).clone())
            });
            if owner.as_ref() != Some(key) {
                needs_stall = true;
                excuses.extend(["DuplicatePhoneNumber", "AlreadyRegistered"]);
                if held.is_some_and(|h| regs.iter().any(|r| r.reg.id == h)) {
                    v.push(format!(
                        "(a) {who} is not the owner of {number} but holds a registration of it"
                    ));
                }
            }
        }
        if !regs.is_empty() && mine.is_empty() {
            needs_stall = true;
            excuses.push("AlreadyRegistered");
        } else if !regs.is_empty()
            && !regs.iter().any(|r| r.owner.as_deref() == Some(uid))
            && !held.is_some_and(|h| mine.iter().any(|r| r.reg.id == h))
        {
            // Only claimable (made outside while this object's attempt was pending): adopting
            // it and refusing it as registered elsewhere are both right (the operator refuses
            // one made before its attempt started, within its clock-skew allowance). Once
            // adopted, it is the object's like any other.
            excuses.push("AlreadyRegistered");
        }

        let in_line = mine.len() == 1
            && regs.len() == 1
            && held == Some(mine[0].reg.id.as_str())
            && patchable(&mine[0].reg) == spec_patchable(spec)
            && mine[0].reg.status == "active";
        if mine.len() > 1 {
            v.push(format!(
                "(a) {who} has {} registrations of {number}",
                mine.len()
            ));
        }
        if excuses.is_empty() {
            // (a) and (e): nothing justifies anything but Ready.
            if !in_line {
                let found: Vec<String> = regs
                    .iter()
                    .map(|r| format!("{} owner={:?} {}", r.reg.id, r.owner, patchable(&r.reg)))
                    .collect();
                v.push(format!(
                    "(a) {who} should hold exactly one registration of {number} matching its spec: status id {held:?}, want {}, OneInbox has [{}]; Ready {ready_true} {ready_reason}, Stalled {stalled:?}",
                    spec_patchable(spec),
                    found.join("; ")
                ));
            } else if !ready_true {
                v.push(format!(
                    "(e) {who} is registered and in line but Ready is not True (reason {ready_reason}, Stalled {stalled:?})"
                ));
            }
            if let Some(s) = stalled
                && s != "ReplacementRequired"
            {
                v.push(format!(
                    "(e) {who} is Stalled ({s}) with nothing to justify it"
                ));
            }
        } else {
            let allowed = |r: &str| excuses.contains(&"*") || excuses.contains(&r);
            // A registration made before needs no password until it is replaced.
            let registered_ok =
                in_line && (excuses == ["SecretNotFound"] || excuses == ["SecretKeyInvalid"]);
            if ready_true && !registered_ok {
                v.push(format!("(e) {who} says Ready although {excuses:?} applies"));
            }
            if !ready_true && !allowed(ready_reason) {
                v.push(format!(
                    "(e) {who}: Ready reason {ready_reason}, expected one of {excuses:?}"
                ));
            }
            if needs_stall && !ready_true && stalled.is_none_or(|s| !allowed(s)) {
                v.push(format!(
                    "(e) {who}: Stalled {stalled:?}, expected one of {excuses:?}"
                ));
            }
        }
    }

    /// (a) and (e) for `managementPolicy: Observe`: the object mirrors the registration it
    /// names (status, else annotation), or else the number's registration found by number
    /// (and names it in the annotation), whoever made it; Ready=True `Observed` when it is
    /// active, `Drifted` exactly when it differs from the spec. Otherwise Ready=False and
    /// Stalled with a reason the world justifies: `RegistrationNotFound` (the id it names is
    /// gone, or the number is not registered), `IdMismatch` (another number's),
    /// `DuplicatePhoneNumber` (another live object claims the number or holds the id).
    fn check_observed(&self, key: &(String, String), obj: &Value, v: &mut Vec<String>) {
        let who = name(key);
        let number = obj["spec"]["phoneNumber"].as_str().unwrap_or_default();
        let status = &obj["status"];
        let held = status["phoneNumberId"].as_str();
        let annotation = obj["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str();
        let pending = crate::world::attempt_in_flight(obj).is_some();
        let named = held.or(annotation.filter(|_| !pending));
        let ready = condition(obj, "Ready");
        let ready_true = ready.is_some_and(|c| c["status"] == "True");
        let ready_reason = ready.and_then(|c| c["reason"].as_str()).unwrap_or("");
        let stalled = condition(obj, "Stalled")
            .filter(|c| c["status"] == "True")
            .and_then(|c| c["reason"].as_str());
        let drifted = condition(obj, "Drifted").is_some_and(|c| c["status"] == "True");
        let ws = crate::world::ws_of(obj);
        // Another live object that claims the number (or names the id) may own it, as the
        // operator's order of claims says; the observer then yields.
        let rival = self.objects.iter().any(|(k, s)| {
            k != key
                && s.obj["metadata"]["deletionTimestamp"].is_null()
                && crate::world::ws_of(&s.obj) == ws
                && (s.obj["spec"]["phoneNumber"].as_str() == Some(number)
                    || named.is_some_and(|n| {
                        s.obj["status"]["phoneNumberId"].as_str() == Some(n)
                            || s.obj["metadata"]["annotations"]["oneinbox.ai/phone-number-id"]
                                .as_str()
                                == Some(n)
                    }))
        });
        // An account that cannot be used: nothing is read (a rival in the same account may be
        // reported first).
        if let Some(p) = self.account_problem(obj) {
            let allowed =
                |r: Option<&str>| r == Some(p) || (rival && r == Some("DuplicatePhoneNumber"));
            if ready_true || !allowed(Some(ready_reason)) || !allowed(stalled) {
                v.push(format!(
                    "(e) {who} (Observe): Ready {ready_true} {ready_reason}, Stalled {stalled:?}, expected {p}"
                ));
            }
            return;
        }
        let target = match named {
            Some(id) => self.api.get_in(&ws, id),
            None => self.api.of_number(&ws, number).into_iter().next(),
        };
        let mut allowed: Vec<&str> = Vec::new();
        if rival {
            allowed.push("DuplicatePhoneNumber");
        }
        match target {
            None => allowed.push("RegistrationNotFound"),
            Some(r) if r.reg.phone_number != number => allowed.push("IdMismatch"),
            Some(r) if r.reg.status == "failed" => allowed.push("RegistrationFailed"),
            Some(r) => {
                let id = r.reg.id.as_str();
                let mirrored = held == Some(id)
                    && annotation == Some(id)
                    && status["state"].as_str() == Some(r.reg.status.as_str());
                let should_drift = patchable(&r.reg) != spec_patchable(&obj["spec"]);
                if ready_true && r.reg.status == "active" {
                    if !mirrored {
                        v.push(format!(
                            "(e) {who} (Observe) says Ready but does not mirror {id}: status {held:?}, annotation {annotation:?}, state {}",
                            status["state"]
                        ));
                    }
                    if ready_reason != "Observed" {
                        v.push(format!(
                            "(e) {who} (Observe) is Ready with reason {ready_reason}, not Observed"
                        ));
                    }
                    if drifted != should_drift {
                        v.push(format!(
                            "(e) {who} (Observe): Drifted is {drifted}, but the registration {} the spec",
                            if should_drift { "differs from" } else { "matches" }
                        ));
                    }
                    return;
                }
                if !rival {
                    v.push(format!(
                        "(a) {who} (Observe) should mirror {id} ({}), but Ready {ready_true} {ready_reason}, Stalled {stalled:?}",
                        r.reg.status
                    ));
                    return;
                }
            }
        }
        if ready_true {
            v.push(format!(
                "(e) {who} (Observe) says Ready although {allowed:?} applies"
            ));
        } else if !allowed.contains(&ready_reason) || stalled.is_none_or(|s| !allowed.contains(&s))
        {
            v.push(format!(
                "(e) {who} (Observe): Ready reason {ready_reason}, Stalled {stalled:?}, expected one of {allowed:?}"
            ));
        }
    }

    /// (f): per object, OneInbox calls and Kubernetes writes in any simulated minute.
    fn check_bounds(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut by_uid: BTreeMap<&str, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for (at, uid, kind) in &self.log {
            let e = by_uid.entry(uid.as_str()).or_default();
            if kind.starts_with("kube:") {
                e.1.push(*at);
            } else {
                e.0.push(*at);
            }
        }
        for (uid, (calls, writes)) in by_uid {
            for (what, times) in [("OneInbox calls", calls), ("Kubernetes writes", writes)] {
                let mut start = 0;
                for end in 0..times.len() {
                    while times[end] - times[start] > WINDOW_MS {
                        start += 1;
                    }
                    let n = end - start + 1;
                    let t = times[end];
                    let stimuli = self
                        .stimuli
                        .iter()
                        .filter(|(at, who)| {
                            *at + 2 * WINDOW_MS >= t
                                && *at <= t
                                && who.as_deref().is_none_or(|w| w == uid)
                        })
                        .count();
                    let bound = BOUND_BASE + BOUND_PER_STIMULUS * stimuli;
                    if n > bound {
                        v.push(format!(
                            "(f) object {uid}: {n} {what} within a simulated minute ending at {:.1}s (bound {bound} with {stimuli} stimuli)",
                            t as f64 / 1000.0
                        ));
                        break;
                    }
                }
            }
        }
        v
    }
}
