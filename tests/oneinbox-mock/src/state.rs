//! The registration store and its pure operations (time is passed in). The checks run in the
//! contract's order after validation: `phone_id` lookup, references, duplicate, SIP resolution,
//! commit (contract: Auth and check order).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::faults::ProvisioningOutcome;
use super::validate::{Change, CreateInput, PatchInput};

/// `fallback` of an inbound routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// Fallback agent.
    pub agent_id: Uuid,
}

/// A stored `InboundRouting`. Absent keys are left out of the JSON, so that "`null` removes
/// that key" (contract: PATCH details) is visible as a removed key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Agent answering inbound calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    /// Agent used when the primary is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Voicemail text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
}

/// A provisioning delay still running: `status` turns into `outcome` at `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// When provisioning ends.
    pub until: Timestamp,
    /// The status reached then.
    pub outcome: ProvisioningOutcome,
}

/// One registration as stored (and persisted). There is deliberately no password field: only
/// `auth_password_set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The `phone_id`.
    pub id: Uuid,
    /// E.164 number.
    pub phone_number: String,
    /// Display name.
    pub friendly_name: Option<String>,
    /// `twilio` or `telnyx`.
    pub provider: String,
    /// Agent the number is wired to.
    pub agent_id: Uuid,
    /// `active`, `provisioning`, `failed` or any forced string.
    pub status: String,
    /// `ST_…` when the number has inbound routing.
    pub inbound_trunk_id: Option<String>,
    /// Always `ST_…`.
    pub outbound_trunk_id: Option<String>,
    /// `SDR_…` when the number has inbound routing.
    pub dispatch_rule_id: Option<String>,
    /// Creation time (microsecond precision, unique per store).
    pub created_at: Timestamp,
    /// Last change of a stored value.
    pub updated_at: Timestamp,
    /// Routing, if any.
    pub inbound_routing: Option<Routing>,
    /// Telephony integration id.
    pub credential_id: Option<Uuid>,
    /// `provider_config.trunk_address`.
    pub trunk_address: Option<String>,
    /// `provider_config.auth_username`.
    pub auth_username: Option<String>,
    /// `provider_config` keys outside the schema.
    #[serde(default)]
    pub provider_config_extra: Map<String, Value>,
    /// Whether a non-empty password was given.
    pub auth_password_set: bool,
    /// Provisioning still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// `2023-11-07T05:31:56.123456Z`: RFC 3339 in UTC with the microseconds that order the list.
pub fn format_ts(ts: Timestamp) -> String {
    jiff::fmt::temporal::DateTimePrinter::new()
        .precision(Some(6))
        .timestamp_to_string(&ts)
}

/// `PhoneNumberResponse`: what `/v1` answers. It has no field for any SIP secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhoneNumberView {
    /// uuid.
    pub id: Uuid,
    /// E.164.
    pub phone_number: String,
    /// Display name or null.
    pub friendly_name: Option<String>,
    /// Carrier.
    pub provider: String,
    /// Agent.
    pub agent_id: Uuid,
    /// Status.
    pub status: String,
    /// Inbound trunk or null.
    pub inbound_trunk_id: Option<String>,
    /// Outbound trunk.
    pub outbound_trunk_id: Option<String>,
    /// Dispatch rule or null.
    pub dispatch_rule_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Routing or null.
    pub inbound_routing: Option<Routing>,
}

/// The `/_mock/` view: the response fields plus what only a test may inspect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InternalView {
    /// The `/v1` fields.
    #[serde(flatten)]
    pub public: PhoneNumberView,
    /// Telephony integration id.
    pub credential_id: Option<Uuid>,
    /// SIP trunk host.
    pub trunk_address: Option<String>,
    /// SIP user name.
    pub auth_username: Option<String>,
    /// `provider_config` keys outside the schema.
    pub provider_config_extra: Map<String, Value>,
    /// Whether a password was given (never the password).
    pub auth_password_set: bool,
}

impl Registration {
    /// The `/v1` view.
    pub fn view(&self) -> PhoneNumberView {
        PhoneNumberView {
            id: self.id,
            phone_number: self.phone_number.clone(),
            friendly_name: self.friendly_name.clone(),
            provider: self.provider.clone(),
            agent_id: self.agent_id,
            status: self.status.clone(),
            inbound_trunk_id: self.inbound_trunk_id.clone(),
            outbound_trunk_id: self.outbound_trunk_id.clone(),
            dispatch_rule_id: self.dispatch_rule_id.clone(),
            created_at: format_ts(self.created_at),
            updated_at: format_ts(self.updated_at),
            inbound_routing: self.inbound_routing.clone(),
        }
    }

    /// The `/_mock/` view.
    pub fn internal_view(&self) -> InternalView {
        InternalView {
            public: self.view(),
            credential_id: self.credential_id,
            trunk_address: self.trunk_address.clone(),
            auth_username: self.auth_username.clone(),
            provider_config_extra: self.provider_config_extra.clone(),
            auth_password_set: self.auth_password_set,
        }
    }

    /// The stored values a PATCH may change, for "did anything change" (contract: PATCH details).
    fn patchable(&self) -> (&Option<String>, Uuid, &Option<Routing>, &Option<String>) {
        (
            &self.friendly_name,
            self.agent_id,
            &self.inbound_routing,
            &self.inbound_trunk_id,
        )
    }
}

/// Why a POST was refused after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// 404 `{"detail": "<field> not found"}`.
    Reference(&'static str),
    /// 409 with the existing registration's id.
    Duplicate(Uuid),
    /// 400 `SIP_TRUNK_PROVISION_FAILED` with this message.
    Sip(String),
}

/// Why a PATCH was refused after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// 404 `Phone number not found`.
    NotFound,
    /// 404 `{"detail": "<field> not found"}`.
    Reference(&'static str),
}

/// Everything that is one workspace: registrations and the seeded agent / credential ids.
#[derive(Debug, Clone, Default)]
pub struct Store {
    records: BTreeMap<Uuid, Registration>,
    /// Microseconds of the last timestamp handed out, so that every new one is later.
    last_us: i64,
    agents: Option<BTreeSet<Uuid>>,
    credentials: Option<BTreeSet<Uuid>>,
}

/// `ST_` / `SDR_` followed by random characters: opaque ids like the real ones.
fn opaque_id(prefix: &str) -> String {
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

impl Store {
    /// A store holding `records` (e.g. loaded from the state file).
    pub fn with_records(records: Vec<Registration>) -> Self {
        let last_us = records
            .iter()
            .flat_map(|r| [r.created_at, r.updated_at])
            .map(Timestamp::as_microsecond)
            .max()
            .unwrap_or(0);
        Self {
            records: records.into_iter().map(|r| (r.id, r)).collect(),
            last_us,
            agents: None,
            credentials: None,
        }
    }

    /// A timestamp after every earlier one, truncated to microseconds so that the formatted value
    /// orders exactly as the stored one.
    fn tick(&mut self, now: Timestamp) -> Timestamp {
        let us = now.as_microsecond().max(self.last_us.saturating_add(1));
        self.last_us = us;
        Timestamp::from_microsecond(us).unwrap_or(now)
    }

    /// Ends the provisioning delays that are over.
    pub fn settle(&mut self, now: Timestamp) {
        for rec in self.records.values_mut() {
            if let Some(p) = &rec.pending
                && p.until <= now
            {
                rec.status = p.outcome.as_str().to_owned();
                rec.pending = None;
            }
        }
    }

    /// All registrations ordered by `created_at`, then `id` (contract: List).
    pub fn ordered(&self) -> Vec<&Registration> {
        let mut all: Vec<&Registration> = self.records.values().collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// One page of the registrations matching `filter` (exact), and how many match.
    pub fn list(
        &self,
        filter: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> (Vec<&Registration>, usize) {
        let matching: Vec<&Registration> = self
            .ordered()
            .into_iter()
            .filter(|r| filter.is_none_or(|f| r.phone_number == f))
            .collect();
        let total = matching.len();
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let page = matching
            .into_iter()
            .skip(skip)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        (page, total)
    }

    /// One registration.
    pub fn get(&self, id: &Uuid) -> Option<&Registration> {
        self.records.get(id)
    }

    /// Seeds the known agent ids; `None` accepts every uuid again.
    pub fn set_agents(&mut self, ids: Option<BTreeSet<Uuid>>) {
        self.agents = ids;
    }

    /// Seeds the known credential ids; `None` accepts every uuid again.
    pub fn set_credentials(&mut self, ids: Option<BTreeSet<Uuid>>) {
        self.credentials = ids;
    }

    /// The seeded agent ids.
    pub fn agents(&self) -> Option<&BTreeSet<Uuid>> {
        self.agents.as_ref()
    }

    /// The seeded credential ids.
    pub fn credentials(&self) -> Option<&BTreeSet<Uuid>> {
        self.credentials.as_ref()
    }

    fn agent_known(&self, id: Uuid) -> bool {
        self.agents.as_ref().is_none_or(|set| set.contains(&id))
    }

    fn credential_known(&self, id: Uuid) -> bool {
        self.credentials
            .as_ref()
            .is_none_or(|set| set.contains(&id))
    }

    /// The first unknown reference among the given agent ids, in the order of the contract (Unknown ids).
    fn check_agents(
        &self,
        agent_id: Option<Uuid>,
        routing_agent: Option<Uuid>,
        fallback_agent: Option<Uuid>,
    ) -> Result<(), &'static str> {
        let checks = [
            (agent_id, "agent_id not found"),
            (routing_agent, "inbound_routing.agent_id not found"),
            (
                fallback_agent,
                "inbound_routing.fallback.agent_id not found",
            ),
        ];
        for (id, detail) in checks {
            if let Some(id) = id
                && !self.agent_known(id)
            {
                return Err(detail);
            }
        }
        Ok(())
    }

    /// Registers a number: references, duplicate, SIP resolution, commit. `provisioning` is the
    /// configured delay; `None` creates the number `active`.
    pub fn create(
        &mut self,
        input: CreateInput,
        now: Timestamp,
        provisioning: Option<(jiff::SignedDuration, ProvisioningOutcome)>,
    ) -> Result<&Registration, CreateError> {
        let routing_agent = input.inbound_routing.as_ref().and_then(|r| r.agent_id);
        let fallback_agent = input.inbound_routing.as_ref().and_then(|r| r.fallback);
        self.check_agents(Some(input.agent_id), routing_agent, fallback_agent)
            .map_err(CreateError::Reference)?;
        if let Some(cred) = input.credential_id
            && !self.credential_known(cred)
        {
            return Err(CreateError::Reference("credential_id not found"));
        }
        if let Some(existing) = self
            .records
            .values()
            .find(|r| r.phone_number == input.phone_number)
        {
            return Err(CreateError::Duplicate(existing.id));
        }
        match &input.provider_config {
            Some(cfg) => {
                let missing = cfg.missing_fields();
                if !missing.is_empty() {
                    return Err(CreateError::Sip(format!(
                        "SIP trunk credentials could not be resolved: provider_config is missing {}",
                        missing.join(", ")
                    )));
                }
            }
            None if input.credential_id.is_none() => {
                return Err(CreateError::Sip(
                    "SIP trunk credentials could not be resolved: send a complete provider_config \
                     or a credential_id"
                        .to_owned(),
                ));
            }
            None => {}
        }

        let created = self.tick(now);
        let id = loop {
            let id = Uuid::new_v4();
            if !self.records.contains_key(&id) {
                break id;
            }
        };
        let has_routing = input.inbound_routing.is_some();
        let (status, pending) = match provisioning {
            Some((delay, outcome)) if delay.is_positive() => (
                "provisioning".to_owned(),
                Some(Pending {
                    until: created.checked_add(delay).unwrap_or(created),
                    outcome,
                }),
            ),
            _ => ("active".to_owned(), None),
        };
        let cfg = input.provider_config.unwrap_or_default();
        let rec = Registration {
            id,
            phone_number: input.phone_number,
            friendly_name: input.friendly_name,
            provider: input.provider.as_str().to_owned(),
            agent_id: input.agent_id,
            status,
            inbound_trunk_id: has_routing.then(|| opaque_id("ST_")),
            outbound_trunk_id: Some(opaque_id("ST_")),
            dispatch_rule_id: has_routing.then(|| opaque_id("SDR_")),
            created_at: created,
            updated_at: created,
            inbound_routing: input.inbound_routing.map(|r| Routing {
                agent_id: r.agent_id,
                fallback: r.fallback.map(|agent_id| Fallback { agent_id }),
                voicemail_message: r.voicemail_message,
            }),
            credential_id: input.credential_id,
            trunk_address: cfg.trunk_address,
            auth_username: cfg.auth_username,
            provider_config_extra: cfg.extra,
            auth_password_set: cfg.auth_password_set,
            pending,
        };
        Ok(self.records.entry(id).or_insert(rec))
    }

    /// Applies a PATCH (contract: PATCH details): lookup, references, then the merge. `updated_at` moves only when
    /// a stored value changed; `status` is never touched. Returns the record and whether it
    /// changed.
    pub fn patch(
        &mut self,
        id: &Uuid,
        patch: PatchInput,
        now: Timestamp,
    ) -> Result<(&Registration, bool), PatchError> {
        if !self.records.contains_key(id) {
            return Err(PatchError::NotFound);
        }
        let routing_agent = patch
            .inbound_routing
            .as_ref()
            .and_then(|r| match r.agent_id {
                Change::Set(id) => Some(id),
                _ => None,
            });
        let fallback_agent = patch
            .inbound_routing
            .as_ref()
            .and_then(|r| match r.fallback {
                Change::Set(id) => Some(id),
                _ => None,
            });
        self.check_agents(patch.agent_id, routing_agent, fallback_agent)
            .map_err(PatchError::Reference)?;

        let Some(current) = self.records.get(id) else {
            return Err(PatchError::NotFound);
        };
        let mut next = current.clone();
        match patch.friendly_name {
            Change::Absent => {}
            Change::Null => next.friendly_name = None,
            Change::Set(name) => next.friendly_name = Some(name),
        }
        if let Some(agent) = patch.agent_id {
            next.agent_id = agent;
        }
        if let Some(rp) = patch.inbound_routing {
            let mut routing = next.inbound_routing.clone().unwrap_or_default();
            match rp.agent_id {
                Change::Absent => {}
                Change::Null => routing.agent_id = None,
                Change::Set(a) => routing.agent_id = Some(a),
            }
            match rp.fallback {
                Change::Absent => {}
                Change::Null => routing.fallback = None,
                Change::Set(a) => routing.fallback = Some(Fallback { agent_id: a }),
            }
            match rp.voicemail_message {
                Change::Absent => {}
                Change::Null => routing.voicemail_message = None,
                Change::Set(m) => routing.voicemail_message = Some(m),
            }
            next.inbound_routing = Some(routing);
            if next.inbound_trunk_id.is_none() {
                next.inbound_trunk_id = Some(opaque_id("ST_"));
            }
            if next.dispatch_rule_id.is_none() {
                next.dispatch_rule_id = Some(opaque_id("SDR_"));
            }
        }
        let changed = next.patchable() != current.patchable();
        if changed {
            next.updated_at = self.tick(now);
            self.records.insert(*id, next);
        }
        let rec = self.records.get(id).ok_or(PatchError::NotFound)?;
        Ok((rec, changed))
    }

    /// Forgets a registration; `false` if it was unknown.
    pub fn delete(&mut self, id: &Uuid) -> bool {
        self.records.remove(id).is_some()
    }

    /// Forces a status (test hook); ends any provisioning delay. `updated_at` is left alone.
    pub fn set_status(&mut self, id: &Uuid, status: String) -> Option<&Registration> {
        let rec = self.records.get_mut(id)?;
        rec.status = status;
        rec.pending = None;
        Some(rec)
    }

    /// Forgets registrations and seeds.
    pub fn clear(&mut self) {
        self.records.clear();
        self.agents = None;
        self.credentials = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Provider, ProviderConfigInput, RoutingInput, RoutingPatch};

    fn uuid(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn input(number: &str) -> CreateInput {
        CreateInput {
            phone_number: number.to_owned(),
            provider: Provider::Twilio,
            agent_id: uuid(1),
            friendly_name: Some("Sales".to_owned()),
            provider_config: Some(ProviderConfigInput {
                trunk_address: Some("x.pstn.twilio.com".to_owned()),
                auth_username: Some("u".to_owned()),
                auth_password_set: true,
                extra: Map::new(),
            }),
            inbound_routing: None,
            credential_id: None,
        }
    }

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn create_without_routing_has_null_inbound_ids() {
        let mut s = Store::default();
        let rec = s.create(input("+15550001"), ts(1_000), None).unwrap();
        assert_eq!(rec.status, "active");
        assert!(rec.outbound_trunk_id.as_deref().unwrap().starts_with("ST_"));
        assert!(rec.inbound_trunk_id.is_none());
        assert!(rec.dispatch_rule_id.is_none());
        assert_eq!(rec.created_at, rec.updated_at);
    }

    #[test]
    fn create_with_routing_has_all_ids() {
        let mut s = Store::default();
        let mut i = input("+15550001");
        i.inbound_routing = Some(RoutingInput::default());
        let rec = s.create(i, ts(1_000), None).unwrap();
        assert!(rec.inbound_trunk_id.as_deref().unwrap().starts_with("ST_"));
        assert!(rec.dispatch_rule_id.as_deref().unwrap().starts_with("SDR_"));
        assert_eq!(rec.inbound_routing, Some(Routing::default()));
    }

    #[test]
    fn check_order_references_then_duplicate_then_sip() {
        let mut s = Store::default();
        let first = s.create(input("+15550001"), ts(1), None).unwrap().id;
        let mut dup = input("+15550001");
        dup.provider_config = None;
        assert_eq!(
            s.create(dup.clone(), ts(2), None),
            Err(CreateError::Duplicate(first))
        );
        s.set_agents(Some([uuid(9)].into()));
        assert_eq!(
            s.create(dup, ts(2), None),
            Err(CreateError::Reference("agent_id not found"))
        );
        s.set_agents(None);
        let mut neither = input("+15550002");
        neither.provider_config = None;
        assert!(matches!(
            s.create(neither, ts(3), None),
            Err(CreateError::Sip(_))
        ));
        let mut cred = input("+15550002");
        cred.provider_config = None;
        cred.credential_id = Some(uuid(5));
        s.set_credentials(Some([uuid(6)].into()));
        assert_eq!(
            s.create(cred.clone(), ts(3), None),
            Err(CreateError::Reference("credential_id not found"))
        );
        s.set_credentials(Some([uuid(5)].into()));
        assert!(s.create(cred, ts(3), None).is_ok());
    }

    #[test]
    fn routing_references_are_checked_in_order() {
        let mut s = Store::default();
        s.set_agents(Some([uuid(1)].into()));
        let mut i = input("+15550001");
        i.inbound_routing = Some(RoutingInput {
            agent_id: Some(uuid(2)),
            fallback: Some(uuid(3)),
            voicemail_message: None,
        });
        assert_eq!(
            s.create(i.clone(), ts(1), None),
            Err(CreateError::Reference("inbound_routing.agent_id not found"))
        );
        i.inbound_routing = Some(RoutingInput {
            agent_id: Some(uuid(1)),
            fallback: Some(uuid(3)),
            voicemail_message: None,
        });
        assert_eq!(
            s.create(i, ts(1), None),
            Err(CreateError::Reference(
                "inbound_routing.fallback.agent_id not found"
            ))
        );
    }

    #[test]
    fn incomplete_provider_config_fails_even_with_credential() {
        let mut s = Store::default();
        let mut i = input("+15550001");
        i.credential_id = Some(uuid(4));
        if let Some(cfg) = i.provider_config.as_mut() {
            cfg.auth_password_set = false;
        }
        let Err(CreateError::Sip(msg)) = s.create(i, ts(1), None) else {
            panic!("expected SIP failure");
        };
        assert!(msg.contains("auth_password"));
    }

    #[test]
    fn timestamps_are_unique_and_increasing() {
        let mut s = Store::default();
        let a = s
            .create(input("+15550001"), ts(5), None)
            .unwrap()
            .created_at;
        let b = s
            .create(input("+15550002"), ts(5), None)
            .unwrap()
            .created_at;
        let c = s
            .create(input("+15550003"), ts(4), None)
            .unwrap()
            .created_at;
        assert!(a < b && b < c);
        let order: Vec<&str> = s
            .ordered()
            .iter()
            .map(|r| r.phone_number.as_str())
            .collect();
        assert_eq!(order, ["+15550001", "+15550002", "+15550003"]);
    }

    #[test]
    fn list_filters_and_pages() {
        let mut s = Store::default();
        for n in 0..5 {
            s.create(input(&format!("+1555000{n}")), ts(1), None)
                .unwrap();
        }
        let (page, total) = s.list(None, 2, 3);
        assert_eq!(total, 5);
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].phone_number, "+15550003");
        let (page, total) = s.list(Some("+15550002"), 20, 0);
        assert_eq!((page.len(), total), (1, 1));
        let (page, total) = s.list(Some(" 15550002"), 20, 0);
        assert_eq!((page.len(), total), (0, 0));
        let (page, total) = s.list(None, 20, 99);
        assert_eq!((page.len(), total), (0, 5));
    }

    #[test]
    fn patch_merges_and_moves_updated_at_only_on_change() {
        let mut s = Store::default();
        let mut i = input("+15550001");
        i.inbound_routing = Some(RoutingInput {
            agent_id: Some(uuid(2)),
            fallback: Some(uuid(3)),
            voicemail_message: Some("hi".to_owned()),
        });
        let rec = s.create(i, ts(1), None).unwrap().clone();

        let (same, changed) = s.patch(&rec.id, PatchInput::default(), ts(2)).unwrap();
        assert!(!changed);
        assert_eq!(same, &rec);

        let patch = PatchInput {
            inbound_routing: Some(RoutingPatch {
                fallback: Change::Null,
                ..RoutingPatch::default()
            }),
            ..PatchInput::default()
        };
        let (after, changed) = s.patch(&rec.id, patch, ts(3)).unwrap();
        assert!(changed);
        assert!(after.updated_at > rec.updated_at);
        let routing = after.inbound_routing.clone().unwrap();
        assert_eq!(routing.fallback, None);
        assert_eq!(routing.agent_id, Some(uuid(2)));
        assert_eq!(routing.voicemail_message.as_deref(), Some("hi"));
        assert_eq!(after.inbound_trunk_id, rec.inbound_trunk_id);
        assert_eq!(after.status, rec.status);

        let patch = PatchInput {
            friendly_name: Change::Null,
            agent_id: Some(uuid(7)),
            ..PatchInput::default()
        };
        let (after, _) = s.patch(&rec.id, patch, ts(4)).unwrap();
        assert_eq!(after.friendly_name, None);
        assert_eq!(after.agent_id, uuid(7));
    }

    #[test]
    fn patch_adding_routing_creates_inbound_ids() {
        let mut s = Store::default();
        let rec = s.create(input("+15550001"), ts(1), None).unwrap().clone();
        let patch = PatchInput {
            inbound_routing: Some(RoutingPatch {
                voicemail_message: Change::Set("vm".to_owned()),
                ..RoutingPatch::default()
            }),
            ..PatchInput::default()
        };
        let (after, changed) = s.patch(&rec.id, patch, ts(2)).unwrap();
        assert!(changed);
        assert!(after.inbound_trunk_id.is_some());
        assert!(after.dispatch_rule_id.is_some());
        assert_eq!(after.outbound_trunk_id, rec.outbound_trunk_id);
    }

    #[test]
    fn patch_lookup_precedes_references() {
        let mut s = Store::default();
        s.set_agents(Some(BTreeSet::new()));
        let patch = PatchInput {
            agent_id: Some(uuid(1)),
            ..PatchInput::default()
        };
        assert_eq!(
            s.patch(&uuid(0), patch.clone(), ts(1)).err(),
            Some(PatchError::NotFound)
        );
        s.set_agents(None);
        let id = s.create(input("+15550001"), ts(1), None).unwrap().id;
        s.set_agents(Some(BTreeSet::new()));
        assert_eq!(
            s.patch(&id, patch, ts(1)).err(),
            Some(PatchError::Reference("agent_id not found"))
        );
    }

    #[test]
    fn provisioning_settles_after_the_delay() {
        let mut s = Store::default();
        let delay = jiff::SignedDuration::from_secs(10);
        let id = s
            .create(
                input("+15550001"),
                ts(100),
                Some((delay, ProvisioningOutcome::Failed)),
            )
            .unwrap()
            .id;
        assert_eq!(s.get(&id).unwrap().status, "provisioning");
        s.settle(ts(105));
        assert_eq!(s.get(&id).unwrap().status, "provisioning");
        s.settle(ts(111));
        assert_eq!(s.get(&id).unwrap().status, "failed");
        assert!(s.get(&id).unwrap().pending.is_none());
    }

    #[test]
    fn views_hold_no_secret_fields() {
        let mut s = Store::default();
        let rec = s.create(input("+15550001"), ts(1), None).unwrap();
        let public = serde_json::to_value(rec.view()).unwrap();
        assert!(public.get("provider_config").is_none());
        assert!(public.get("credential_id").is_none());
        assert_eq!(public["inbound_routing"], Value::Null);
        assert_eq!(public["created_at"], "1970-01-01T00:00:01.000000Z");
        let internal = serde_json::to_value(rec.internal_view()).unwrap();
        assert_eq!(internal["auth_password_set"], true);
        assert_eq!(internal["trunk_address"], "x.pstn.twilio.com");
        assert!(internal.get("auth_password").is_none());
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut s = Store::default();
        let rec = s.create(input("+15550001"), ts(1), None).unwrap().clone();
        let text = serde_json::to_string(&rec).unwrap();
        let back: Registration = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
        let reloaded = Store::with_records(vec![back]);
        assert_eq!(reloaded.get(&rec.id), Some(&rec));
    }
}
