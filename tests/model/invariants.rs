//! The invariants checked after a case has healed (and, for b-Orphan, c and g, while it runs).
//!
//! (a) every live object that nothing justifies stalling has exactly one registration of its
//!     number, it is the one its status names, and its PATCHable fields match the spec;
//! (b) a removed object with `deletionPolicy: Delete` leaves no registration it owned (unless it
//!     never held one: its status never named one and no adoption of it was confirmed), one
//!     with Orphan leaves the registration it held;
//! (c) no PATCH or DELETE of a registration the object neither created nor deliberately adopted
//!     (checked at every call, `oneinbox.rs`);
//! (d) no object is left terminating;
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
//!     write), unless `managementPolicy: Observe`.

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
            .entry(uid)
            .or_default()
            .insert(id.to_owned());
        let finalized = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == oneinbox_operator::crd::FINALIZER));
        if !gone && !finalized && obj["spec"]["managementPolicy"] != "Observe" {
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
            if !s.obj["metadata"]["deletionTimestamp"].is_null() {
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
        v
    }

    fn check_live(&self, key: &(String, String), obj: &Value, v: &mut Vec<String>) {
        let who = name(key);
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        let spec = &obj["spec"];
        let number = spec["phoneNumber"].as_str().unwrap_or_default();
        let generation = &obj["metadata"]["generation"];
        let regs = self.api.of_number(number);
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
        let held = status["phoneNumberId"].as_str();
        let annotation = obj["metadata"]["annotations"]["oneinbox.ai/phone-number-id"].as_str();
        if let Some(id) = held {
            match self.api.regs.get(id) {
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
                    // The ids OneInbox may re-provision outside: mirrored as the API holds them.
                    for (field, api) in [
                        ("inboundTrunkId", &r.reg.inbound_trunk_id),
                        ("outboundTrunkId", &r.reg.outbound_trunk_id),
                        ("dispatchRuleId", &r.reg.dispatch_rule_id),
                    ] {
                        if status[field].as_str() != api.as_deref() {
                            v.push(format!(
                                "(e) {who}: status.{field} {} but OneInbox says {api:?}",
                                status[field]
                            ));
                        }
                    }
                    if status["state"].as_str() != Some(r.reg.status.as_str()) {
                        v.push(format!(
                            "(e) {who}: status.state {} but OneInbox says {}",
                            status["state"], r.reg.status
                        ));
                    }
                }
            }
            // The annotation is input (adoption, restore); one that names another id is set
            // right. A create writes none: the status alone holds the id.
            if annotation.is_some_and(|a| a != id) {
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
        let secret_missing = spec["providerConfig"]["authPasswordSecretRef"]["name"]
            .as_str()
            .is_some_and(|s| {
                self.secrets
                    .get(&(key.0.clone(), s.to_owned()))
                    .is_none_or(|(_, d)| d.get("password").is_none_or(|p| p.is_empty()))
            });
        if secret_missing {
            excuses.push("SecretNotFound");
        }
        if let Some(a) = annotation
            && held != Some(a)
            && let Some(r) = self.api.regs.get(a)
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
            .filter(|(_, s)| s.obj["spec"]["phoneNumber"].as_str() == Some(number))
            .map(|(k, s)| (k, &s.obj))
            .collect();
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
            let registered_ok = in_line && excuses == ["SecretNotFound"];
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
