//! In-memory OneInbox: `OneInboxApi` implemented over the shared world, following the
//! project's API contract (as docs/model-test.md summarizes it): a 409 with the existing
//! id for a number registered twice, 404 for unknown ids, DELETE then forgets the record, PATCH
//! merges routing (null removes a key), uuids come back in canonical lower case (the API parses
//! them as uuids), and nothing changes on a 429 or an injected 5xx. Registrations are held per
//! workspace, as the mock server's are: the key a call carries (the operator-wide key, or the
//! account key the operator's registry put in the client's key cell) selects the workspace it
//! sees, and a key no workspace accepts is 401.
//!
//! Faults are one-shot and hit the next matching calls: an HTTP status (5xx, 429 with
//! Retry-After, 401), latency (past the client timeout it becomes a timeout, performed), a
//! commit-then-drop (performed, then the connection closes) and a drop (nothing performed).
//! Every call is charged to the object whose pass made it, and a PATCH or DELETE of a
//! registration that object neither created nor deliberately adopted is recorded as a
//! violation of invariant (c).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use oneinbox_operator::oneinbox::{
    ApiError, Deregistered, OneInboxApi, PatchRequest, RegisterRequest, Registration, Routing,
    RoutingFallback,
};
use serde_json::{Value, json};

use crate::operator;
use crate::world::{Gate, Shared, World, lock};

/// The client's timeout on one call: latency beyond it is a timeout.
pub const CLIENT_TIMEOUT_MS: u64 = 15_000;

/// Which OneInbox call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Register,
    Get,
    List,
    Patch,
    Delete,
}

impl Call {
    /// The kind of path the call goes to (a 404 means "gone" only on an item).
    fn endpoint(self) -> oneinbox_operator::oneinbox::Endpoint {
        use oneinbox_operator::oneinbox::Endpoint;
        match self {
            Call::Register | Call::List => Endpoint::Collection,
            Call::Get | Call::Patch | Call::Delete => Endpoint::Item,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Call::Register => "register",
            Call::Get => "get",
            Call::List => "list",
            Call::Patch => "patch",
            Call::Delete => "deregister",
        }
    }
    fn mutating(self) -> bool {
        matches!(self, Call::Register | Call::Patch | Call::Delete)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this HTTP status and change nothing (`retry_after` in seconds).
    Status { code: u16, retry_after: Option<u64> },
    /// Take this long; at or past the client timeout the client gives up (the server still acts).
    Latency { ms: u64 },
    /// Act, then close the connection without an answer.
    CommitThenDrop,
    /// Close the connection without acting.
    Drop,
    /// A request refused for its content (400 `SIP_TRUNK_PROVISION_FAILED`, or a 422 list),
    /// permanent for that input; with `echo`, the body repeats the request's SIP password, as a
    /// framework's validation error repeats its input.
    Rejected { code: u16, echo: bool },
}

/// An agent uuid OneInbox does not know: POST and PATCH naming it answer 404 `<field> not
/// found`.
pub const UNKNOWN_AGENT: &str = "0badc0de-0000-4000-8000-00000000a9e7";

#[derive(Clone, Debug)]
pub struct Fault {
    /// `None` = any call.
    pub call: Option<Call>,
    pub kind: FaultKind,
    pub count: u32,
}

/// One registration and who may touch it.
#[derive(Clone, Debug)]
pub struct Reg {
    pub reg: Registration,
    /// UID of the object that created it or deliberately adopted it; `None` = made outside.
    pub owner: Option<String>,
    /// Objects that held a pending-create marker for its number when it was made outside: the
    /// design lets them adopt it on look-up, since it is indistinguishable from their own.
    pub claimants: BTreeSet<String>,
    /// The owner adopted it by naming it in the id annotation (not by its own POST).
    pub by_annotation: bool,
    /// The workspace that holds it: only a key of that workspace sees it.
    pub ws: String,
}

#[derive(Default)]
pub struct ApiState {
    pub regs: BTreeMap<String, Reg>,
    pub next_id: u64,
    pub faults: VecDeque<Fault>,
    /// Every registration deleted: its id, the uid of the caller (`None` = outside), and
    /// whether the caller was being deleted with `deletionPolicy: Orphan` at the time.
    pub deleted: Vec<(String, Option<String>, bool)>,
    /// The API key of the operator (a secret value too).
    pub api_key: String,
    /// Every API key OneInbox accepts, and the workspace it reaches (a key of none is 401).
    pub keys: BTreeMap<String, String>,
    /// A workspace that answers every call with this status until the world heals (one
    /// account's 429 storm, or its key refused with 401).
    pub storm: Option<(String, u16)>,
}

impl ApiState {
    fn take_fault(&mut self, call: Call) -> Option<FaultKind> {
        let i = self
            .faults
            .iter()
            .position(|f| f.call.is_none_or(|c| c == call))?;
        let f = &mut self.faults[i];
        let kind = f.kind.clone();
        f.count = f.count.saturating_sub(1);
        if f.count == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }

    /// The registrations of `number` in workspace `ws`.
    pub fn of_number(&self, ws: &str, number: &str) -> Vec<&Reg> {
        self.regs
            .values()
            .filter(|r| r.reg.phone_number == number && r.ws == ws)
            .collect()
    }

    /// Registration `id` as a key of workspace `ws` sees it.
    pub fn get_in(&self, ws: &str, id: &str) -> Option<&Reg> {
        self.regs.get(id).filter(|r| r.ws == ws)
    }
}

fn canonical_uuid(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn routing_of(r: &Routing) -> Routing {
    Routing {
        agent_id: r.agent_id.as_deref().map(canonical_uuid),
        fallback: r.fallback.as_ref().map(|f| RoutingFallback {
            agent_id: canonical_uuid(&f.agent_id),
        }),
        voicemail_message: r.voicemail_message.clone(),
    }
}

/// Now on the operator's clock (the wall clock; simulated time moves stored times back).
fn timestamp() -> String {
    jiff::Timestamp::now().to_string()
}

enum Outcome<T> {
    Answer(T),
    Hang,
}

impl World {
    /// Create a registration in workspace `ws` directly (outside the cluster, or by an
    /// object's POST).
    pub fn new_registration(
        &mut self,
        ws: &str,
        number: &str,
        agent: &str,
        friendly_name: Option<String>,
        routing: Option<Routing>,
        owner: Option<String>,
    ) -> String {
        self.api.next_id += 1;
        let id = format!(
            "5f0c{:04x}-0000-4000-8000-{:012x}",
            self.effects % 0xffff,
            self.api.next_id
        );
        // A registration made outside the cluster was made a moment before anything the
        // operator does next: beyond its clock-skew allowance (1 s), as a registration made
        // by another party at another time is.
        let now = if owner.is_none() {
            (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2)).to_string()
        } else {
            timestamp()
        };
        let has_routing = routing.is_some();
        let reg = Registration {
            id: id.clone(),
            phone_number: number.to_owned(),
            friendly_name,
            provider: "twilio".into(),
            agent_id: canonical_uuid(agent),
            status: "active".into(),
            inbound_trunk_id: has_routing.then(|| format!("ST_in_{}", self.api.next_id)),
            outbound_trunk_id: Some(format!("ST_out_{}", self.api.next_id)),
            dispatch_rule_id: has_routing.then(|| format!("SDR_{}", self.api.next_id)),
            created_at: now.clone(),
            updated_at: now,
            inbound_routing: routing.as_ref().map(routing_of),
        };
        let claimants = if owner.is_none() {
            // Objects waiting on an ambiguous POST for this number could take it for theirs.
            self.objects
                .values()
                .filter(|s| {
                    s.obj["spec"]["phoneNumber"].as_str() == Some(number)
                        && crate::world::ws_of(&s.obj) == ws
                        && crate::world::attempt_in_flight(&s.obj).is_some()
                })
                .filter_map(|s| s.obj["metadata"]["uid"].as_str().map(str::to_owned))
                .collect()
        } else {
            BTreeSet::new()
        };
        self.api.regs.insert(
            id.clone(),
            Reg {
                reg,
                owner,
                claimants,
                by_annotation: false,
                ws: ws.to_owned(),
            },
        );
        id
    }

    /// One call with API key `key` (`None`: the operator-wide key); `perform` acts in the
    /// workspace the key reaches.
    fn api_call<T>(
        &mut self,
        call: Call,
        id: Option<&str>,
        password: Option<&str>,
        key: Option<String>,
        perform: impl FnOnce(&mut World, &str) -> Result<T, ApiError>,
    ) -> Outcome<Result<T, ApiError>> {
        let key = key.unwrap_or_else(|| self.api.api_key.clone());
        let ws = self.api.keys.get(&key).cloned();
        self.record(call.kind());
        self.check_account(call, ws.as_deref());
        if call.mutating() && self.current_observe {
            let who = self
                .current
                .clone()
                .and_then(|u| self.key_of_uid(&u))
                .map(|(ns, n)| format!("{ns}/{n}"))
                .unwrap_or_default();
            self.violations.push(format!(
                "(i) {who} sent {} during a pass that started under managementPolicy: Observe",
                call.kind()
            ));
        }
        if matches!(call, Call::Patch | Call::Delete)
            && let Some(id) = id
            && let Some(ws) = &ws
            && self.api.get_in(ws, id).is_some()
        {
            self.check_entitled(call, id);
        }
        let Some(ws) = ws else {
            // A key OneInbox does not know (revoked, or not yet known): refused, nothing done.
            let body = json!({"detail": "Invalid or missing API key"});
            return match self.gate() {
                Gate::Go => Outcome::Answer(Err(operator::api_answer(
                    call.endpoint(),
                    401,
                    None,
                    &body.to_string(),
                    &key,
                ))),
                _ => Outcome::Hang,
            };
        };
        match self.gate() {
            Gate::Hang => return Outcome::Hang,
            Gate::PerformThenHang => {
                let _ = perform(self, &ws);
                return Outcome::Hang;
            }
            Gate::Go => {}
        }
        if let Some((storm, code)) = self.api.storm.clone()
            && storm == ws
        {
            let (body, retry_after) = match code {
                429 => (json!({"detail": "Rate limit exceeded"}), Some(30)),
                _ => (json!({"detail": "Invalid or missing API key"}), None),
            };
            return Outcome::Answer(Err(operator::api_answer(
                call.endpoint(),
                code,
                retry_after.map(std::time::Duration::from_secs),
                &body.to_string(),
                &key,
            )));
        }
        if let Some(kind) = self.api.take_fault(call) {
            // A fault is a stimulus when it fires (it may have been armed long before).
            self.stimuli.push((self.now_ms, None));
            match kind {
                FaultKind::Status { code, retry_after } => {
                    let body = match code {
                        401 => json!({"detail": "Invalid or missing API key"}),
                        // Echoes the key, as a gateway's access log line might.
                        403 => {
                            json!({"detail": format!("API key {key} may not access this workspace")})
                        }
                        429 => json!({"detail": "Rate limit exceeded"}),
                        _ => json!({"detail": "Service Unavailable"}),
                    };
                    return Outcome::Answer(Err(operator::api_answer(
                        call.endpoint(),
                        code,
                        retry_after.map(std::time::Duration::from_secs),
                        &body.to_string(),
                        &key,
                    )));
                }
                FaultKind::Latency { ms } => {
                    self.pass_time_in_call(ms);
                    if ms >= CLIENT_TIMEOUT_MS {
                        let _ = perform(self, &ws);
                        return Outcome::Answer(Err(operator::timeout_error()));
                    }
                }
                FaultKind::CommitThenDrop => {
                    if call.mutating() {
                        let _ = perform(self, &ws);
                    }
                    return Outcome::Answer(Err(operator::connection_error()));
                }
                FaultKind::Drop => return Outcome::Answer(Err(operator::connection_error())),
                FaultKind::Rejected { code, echo } => {
                    if let Some(uid) = self.current.clone() {
                        self.refused_once.insert(uid);
                    }
                    let input = password.filter(|_| echo).unwrap_or("oneinbox");
                    let body = if code == 422 {
                        json!({"detail": [{"loc": ["body", "provider_config", "auth_password"],
                            "msg": format!("String should match pattern, got {input}"),
                            "type": "string_pattern_mismatch", "input": input, "ctx": {}}]})
                    } else {
                        json!({"detail": {"code": "SIP_TRUNK_PROVISION_FAILED",
                            "message": format!("the trunk refused oneinbox:{input}@example.pstn.twilio.com")}})
                    };
                    return Outcome::Answer(Err(operator::api_answer(
                        call.endpoint(),
                        code,
                        None,
                        &body.to_string(),
                        &key,
                    )));
                }
            }
        }
        Outcome::Answer(perform(self, &ws))
    }

    /// Invariant (j): a pass calls OneInbox only with the key of its object's account (a
    /// deletion may fall back to the operator-wide key), and never with the key of an account
    /// that did not exist or did not allow the object's namespace when the pass began.
    fn check_account(&mut self, call: Call, ws: Option<&str>) {
        let (Some(ws), Some(pass)) = (ws, self.current_account.clone()) else {
            return;
        };
        let who = || {
            self.current
                .clone()
                .and_then(|u| self.key_of_uid(&u))
                .map(|(ns, n)| format!("{ns}/{n}"))
                .unwrap_or_default()
        };
        if ws != pass.ws && !(ws == crate::world::OPERATOR_WS && pass.deleting) {
            let who = who();
            self.violations.push(format!(
                "(j) {who} sent {} with a key of workspace {ws}, but its account's workspace is {}",
                call.kind(),
                pass.ws
            ));
        } else if ws == pass.ws && ws != crate::world::OPERATOR_WS && !pass.usable {
            let who = who();
            self.violations.push(format!(
                "(j) {who} sent {} with the key of account {ws}, which did not exist or did not allow its namespace when the pass began",
                call.kind()
            ));
        }
    }

    /// Invariant (c): the object whose pass runs may PATCH or DELETE only a registration it
    /// created or deliberately adopted.
    fn check_entitled(&mut self, call: Call, id: &str) {
        let Some(reg) = self.api.regs.get(id) else {
            return;
        };
        let uid = self.current.clone().unwrap_or_default();
        if reg.owner.as_deref() == Some(uid.as_str()) || reg.claimants.contains(&uid) {
            return;
        }
        let who = self
            .key_of_uid(&uid)
            .map(|(ns, n)| format!("{ns}/{n}"))
            .unwrap_or_else(|| format!("(removed {uid})"));
        let owner = match &reg.owner {
            None => "made outside the cluster".to_owned(),
            Some(o) => match self.key_of_uid(o) {
                Some((ns, n)) => format!("owned by {ns}/{n}"),
                None => format!("owned by a removed object {o}"),
            },
        };
        self.violations.push(format!(
            "(c) {who} sent {} for registration {id}, which it neither created nor deliberately adopted ({owner})",
            call.kind()
        ));
    }

    fn not_found() -> ApiError {
        operator::api_error(
            oneinbox_operator::oneinbox::Endpoint::Item,
            404,
            None,
            r#"{"detail":"Phone number not found"}"#,
        )
    }

    /// 404 `<field> not found` for the first field that names an agent OneInbox does not know.
    fn unknown_agent(fields: &[(&str, Option<&str>)]) -> Result<(), ApiError> {
        match fields
            .iter()
            .find(|(_, a)| a.is_some_and(|a| a.eq_ignore_ascii_case(UNKNOWN_AGENT)))
        {
            Some((field, _)) => Err(operator::api_error(
                oneinbox_operator::oneinbox::Endpoint::Collection,
                404,
                None,
                &json!({"detail": format!("{field} not found")}).to_string(),
            )),
            None => Ok(()),
        }
    }

    fn do_register(&mut self, ws: &str, req: &RegisterRequest) -> Result<Registration, ApiError> {
        let routing = req.inbound_routing.as_ref();
        World::unknown_agent(&[
            ("agent_id", Some(req.agent_id.as_str())),
            (
                "inbound_routing.agent_id",
                routing.and_then(|r| r.agent_id.as_deref()),
            ),
            (
                "inbound_routing.fallback.agent_id",
                routing.and_then(|r| r.fallback.as_ref().map(|f| f.agent_id.as_str())),
            ),
        ])?;
        if let Some(existing) = self.api.of_number(ws, &req.phone_number).first() {
            let body = json!({"detail": {"code": "PHONE_NUMBER_ALREADY_REGISTERED",
                "message": "This phone number is already registered", "phone_id": existing.reg.id}});
            return Err(operator::api_error(
                oneinbox_operator::oneinbox::Endpoint::Collection,
                409,
                None,
                &body.to_string(),
            ));
        }
        let complete = req.provider_config.as_ref().is_some_and(|p| {
            !p.trunk_address.is_empty()
                && !p.auth_username.is_empty()
                // A SIP trunk takes no blank password.
                && !p.auth_password.expose().trim().is_empty()
        });
        if !complete && req.credential_id.is_none() {
            let body = json!({"detail": {"code": "SIP_TRUNK_PROVISION_FAILED", "message": "no SIP credentials"}});
            return Err(operator::api_error(
                oneinbox_operator::oneinbox::Endpoint::Collection,
                400,
                None,
                &body.to_string(),
            ));
        }
        let owner = self.current.clone();
        let id = self.new_registration(
            ws,
            &req.phone_number,
            &req.agent_id,
            req.friendly_name.clone(),
            req.inbound_routing.clone(),
            owner,
        );
        Ok(self.api.regs[&id].reg.clone())
    }

    fn do_patch(
        &mut self,
        ws: &str,
        id: &str,
        req: &PatchRequest,
    ) -> Result<Registration, ApiError> {
        let now = timestamp();
        if self.api.get_in(ws, id).is_none() {
            return Err(World::not_found());
        }
        let routing = req.inbound_routing.as_ref();
        let routing_agent = |k: &str| -> Option<&str> {
            let v = routing?.get(k)?;
            v.as_str().or_else(|| v["agent_id"].as_str())
        };
        World::unknown_agent(&[
            ("agent_id", req.agent_id.as_deref()),
            ("inbound_routing.agent_id", routing_agent("agent_id")),
            (
                "inbound_routing.fallback.agent_id",
                routing_agent("fallback"),
            ),
        ])?;
        let Some(r) = self.api.regs.get_mut(id) else {
            return Err(World::not_found());
        };
        let before = r.reg.clone();
        apply_patch(&mut r.reg, req);
        if r.reg != before {
            r.reg.updated_at = now;
        }
        Ok(r.reg.clone())
    }

    fn do_delete(&mut self, ws: &str, id: &str) -> Result<Deregistered, ApiError> {
        if self.api.get_in(ws, id).is_none() || self.api.regs.remove(id).is_none() {
            return Ok(Deregistered::AlreadyGone);
        }
        let orphan_cleanup = self.current_orphan_cleanup;
        self.api
            .deleted
            .push((id.to_owned(), self.current.clone(), orphan_cleanup));
        Ok(Deregistered::Released)
    }
}

/// PATCH semantics of the contract: absent = unchanged, `friendly_name: null` clears, routing
/// keys merge and a null removes one; giving routing to a number without it adds the trunk and
/// dispatch ids.
pub fn apply_patch(reg: &mut Registration, req: &PatchRequest) {
    if let Some(name) = &req.friendly_name {
        reg.friendly_name = name.clone();
    }
    if let Some(agent) = &req.agent_id {
        reg.agent_id = canonical_uuid(agent);
    }
    if let Some(update) = &req.inbound_routing {
        let mut routing = serde_json::to_value(reg.inbound_routing.clone().unwrap_or_default())
            .unwrap_or_else(|_| json!({}));
        for (k, v) in update {
            if v.is_null() {
                if let Some(o) = routing.as_object_mut() {
                    o.remove(k);
                }
            } else {
                routing[k] = v.clone();
            }
        }
        let parsed: Routing = serde_json::from_value(routing).unwrap_or_default();
        if reg.inbound_routing.is_none() {
            reg.inbound_trunk_id = Some(format!("ST_in_{}", reg.id));
            reg.dispatch_rule_id = Some(format!("SDR_{}", reg.id));
        }
        reg.inbound_routing = Some(routing_of(&parsed));
    }
}

/// The operator's OneInbox client in the model: the operator-wide key's, or an account's
/// (the key cell the registry fills, so a rotated key reaches every call at once).
#[derive(Clone)]
pub struct ModelApi {
    pub world: Shared,
    pub key: Option<oneinbox_operator::oneinbox::KeyCell>,
}

impl ModelApi {
    fn key(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.get().expose().to_owned())
    }
}

async fn finish<T>(o: Outcome<T>) -> T {
    match o {
        Outcome::Answer(t) => t,
        Outcome::Hang => std::future::pending().await,
    }
}

impl OneInboxApi for ModelApi {
    fn for_account(
        &self,
        account: &oneinbox_operator::oneinbox::AccountEndpoint,
    ) -> Result<Self, String> {
        Ok(ModelApi {
            world: self.world.clone(),
            key: Some(account.key.clone()),
        })
    }
    async fn verify(&self) -> Result<(), ApiError> {
        Ok(())
    }
    fn in_background(&self) -> Self {
        self.clone()
    }

    async fn register(&self, req: &RegisterRequest) -> Result<Registration, ApiError> {
        let password = req
            .provider_config
            .as_ref()
            .map(|p| p.auth_password.expose().to_owned());
        let key = self.key();
        let o =
            lock(&self.world).api_call(Call::Register, None, password.as_deref(), key, |w, ws| {
                w.do_register(ws, req)
            });
        finish(o).await
    }

    async fn get(&self, id: &str) -> Result<Registration, ApiError> {
        let key = self.key();
        let o = lock(&self.world).api_call(Call::Get, Some(id), None, key, |w, ws| {
            w.api
                .get_in(ws, id)
                .map(|r| r.reg.clone())
                .ok_or_else(World::not_found)
        });
        finish(o).await
    }

    async fn find_by_number(&self, number: &str) -> Result<Vec<Registration>, ApiError> {
        let key = self.key();
        let o = lock(&self.world).api_call(Call::List, None, None, key, |w, ws| {
            Ok(w.api
                .of_number(ws, number)
                .into_iter()
                .map(|r| r.reg.clone())
                .collect())
        });
        finish(o).await
    }

    async fn patch(&self, id: &str, req: &PatchRequest) -> Result<Registration, ApiError> {
        let key = self.key();
        let o = lock(&self.world).api_call(Call::Patch, Some(id), None, key, |w, ws| {
            w.do_patch(ws, id, req)
        });
        finish(o).await
    }

    async fn deregister(&self, id: &str) -> Result<Deregistered, ApiError> {
        let key = self.key();
        let o = lock(&self.world).api_call(Call::Delete, Some(id), None, key, |w, ws| {
            w.do_delete(ws, id)
        });
        finish(o).await
    }
}

/// The PATCHable fields of `reg` in a comparable form (uuids compared case-insensitively).
pub fn patchable(reg: &Registration) -> Value {
    json!({
        "friendly_name": reg.friendly_name,
        "agent_id": canonical_uuid(&reg.agent_id),
        "routing": reg.inbound_routing.as_ref().map(routing_of).filter(|r| *r != Routing::default()),
    })
}
