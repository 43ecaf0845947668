//! What a case is made of: user actions, API behaviour, crashes and the passing of time, and
//! the proptest strategy that generates (and shrinks) sequences of them.

use proptest::prelude::*;

use crate::oneinbox::{Call, FaultKind};

/// Three object slots: two in namespace `a`, one in `b` (the same name as one in `a`).
pub const SLOTS: [(&str, &str); 3] = [("a", "x"), ("a", "y"), ("b", "x")];
pub const NAMESPACES: [&str; 2] = ["a", "b"];
/// Two numbers for three slots: two objects can claim one number.
pub const NUMBERS: [&str; 2] = ["+15550000001", "+15550000002"];
pub const AGENTS: [&str; 3] = [
    "3c90c3cc-0d44-4b50-8888-8dd25736052a",
    "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
    "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
];
pub const CREDENTIAL_IDS: [&str; 2] = [
    "9b2d7c1e-3f4a-4b5c-8d6e-7f8a9b0c1d2e",
    "7a6b5c4d-3e2f-4109-8a7b-6c5d4e3f2a1b",
];
/// Secret names; `sip-0` exists in both namespaces when a case starts, `sip-1` does not.
pub const SECRETS: [&str; 2] = ["sip-0", "sip-1"];

/// Values of the `oneinbox.ai/poll-interval` annotation: none, valid (one below the 30 s
/// floor), and invalid ones (the default interval applies, with a Warning). `0` (never) is not
/// generated: a healed world is judged by its drift checks.
pub const POLL_INTERVALS: [Option<&str>; 6] = [
    None,
    Some("45s"),
    Some("10s"),
    Some("20m"),
    Some("banana"),
    Some("-1m"),
];

/// An agent uuid in one of its two spellings.
#[derive(Clone, Copy, Debug)]
pub struct Agent {
    pub idx: u8,
    pub upper: bool,
}

impl Agent {
    /// Index 3 is an agent OneInbox does not know (`oneinbox::UNKNOWN_AGENT`).
    pub fn uuid(self) -> String {
        let a = match self.idx {
            3 => crate::oneinbox::UNKNOWN_AGENT,
            i => AGENTS[i as usize % AGENTS.len()],
        };
        if self.upper {
            a.to_ascii_uppercase()
        } else {
            a.to_owned()
        }
    }
}

/// One field of a registration, as changed outside the cluster (every field the API returns
/// but its id, number, provider and timestamps). The API stores uuids in canonical lower case
/// whatever spelling the outside call sent.
#[derive(Clone, Copy, Debug)]
pub enum Drift {
    Agent(Agent),
    FriendlyName(Option<u8>),
    RoutingAgent(Option<Agent>),
    Fallback(Option<Agent>),
    Voicemail(bool),
    /// `inbound_routing` removed altogether.
    NoRouting,
    /// The trunk and dispatch-rule ids replaced (SIP resources re-provisioned outside).
    Trunks,
    /// OneInbox re-provisions the SIP resources (`provisioning`, active again once the world
    /// heals) or reports that provisioning failed (`failed`, for good).
    State {
        failed: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum Creds {
    /// `providerConfig` with the password in Secret `SECRETS[i]`.
    Secret(u8),
    /// `credentialId` `CREDENTIAL_IDS[i]`.
    Stored(u8),
}

/// Whose id a user writes into the `oneinbox.ai/phone-number-id` annotation.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The id of the registration the object itself holds.
    Own,
    /// The id another slot's object holds (possibly in another namespace).
    Other(u8),
    /// An id OneInbox never issued.
    Unknown,
    /// The n-th registration OneInbox holds, whoever made it.
    Existing(u8),
}

/// A user's change that lands while a pass of that object runs (between two of its effects).
#[derive(Clone, Copy, Debug)]
pub enum Edit {
    Agent(Agent),
    FriendlyName(Option<u8>),
    DeletionPolicy {
        orphan: bool,
    },
    /// Switched to `managementPolicy: Observe` (the switch back to Full is a step of its own:
    /// it is a deliberate adoption of the registration the object mirrors).
    Observe,
    ReconcileNow,
    Delete,
}

/// How a Kubernetes write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeFaultKind {
    /// 500 InternalError: nothing written.
    Error,
    /// 504 Timeout, nothing written.
    Timeout,
    /// 504 Timeout after the write landed: the answer is lost.
    Lost,
    /// 429 TooManyRequests (priority and fairness), nothing written.
    Throttled,
}

/// What an administrator (or OneInbox) does to an account.
#[derive(Clone, Copy, Debug)]
pub enum AccountAction {
    /// Deleted: Terminating while PhoneNumbers use it, then gone.
    Delete,
    /// Created (again), if it does not exist.
    Create,
    /// A new key in the workspace and in the account's Secret; the old one revoked or not.
    Rotate { revoke_old: bool },
    /// The workspace's key revoked outside and replaced by one the Secret does not hold (401
    /// for every call of the account until the world heals).
    Revoke,
    /// The account's key Secret deleted.
    DeleteKeySecret,
}

/// The accounts an object may name in `Op::Create`: none (the operator-wide key), the
/// ClusterOneInboxAccount `voice`, or the OneInboxAccount `sales` (which exists only in
/// namespace `b`).
pub const ACCOUNT_REFS: [Option<(&str, &str)>; 3] = [
    None,
    Some(("ClusterOneInboxAccount", "voice")),
    Some(("OneInboxAccount", "sales")),
];

/// The workspaces, in the order `Op::Storm` and `Op::RegisterOutside` pick them.
pub const WORKSPACES: [&str; 3] = ["operator", "voice", "sales"];

#[derive(Clone, Debug)]
pub enum Op {
    // ---- user actions
    Create {
        slot: u8,
        number: u8,
        creds: Creds,
        agent: Agent,
        friendly_name: Option<u8>,
        routing: u8,
        routing_agent: Agent,
        orphan: bool,
        replace: bool,
        /// Created with the id annotation of the number's existing registration, if there is
        /// one (an import).
        import: bool,
        /// `managementPolicy: Observe` (else Full, the default).
        observe: bool,
        /// `spec.accountRef`: `ACCOUNT_REFS[account]`.
        account: u8,
    },
    /// Something happens to account `acct` (0 `voice`, 1 `sales`).
    Account {
        acct: u8,
        action: AccountAction,
    },
    /// Namespace `NAMESPACES[ns]` labelled `team=voice` or not: the cluster account's grant
    /// given or revoked.
    Grant {
        ns: u8,
        allowed: bool,
    },
    /// Set the `oneinbox.ai/poll-interval` annotation to `POLL_INTERVALS[value]`.
    SetPollInterval {
        slot: u8,
        value: u8,
    },
    /// Switch `managementPolicy` (also while the object is being deleted).
    SetManagement {
        slot: u8,
        observe: bool,
    },
    SetAgent {
        slot: u8,
        agent: Agent,
    },
    SetFriendlyName {
        slot: u8,
        name: Option<u8>,
    },
    SetRouting {
        slot: u8,
        routing: u8,
        /// The routing's agent uuids (its own, and the fallback's: the next agent).
        agent: Agent,
    },
    SetCreds {
        slot: u8,
        creds: Creds,
    },
    /// Create the Secret or give it a new password.
    RotateSecret {
        ns: u8,
        secret: u8,
    },
    DeleteSecret {
        ns: u8,
        secret: u8,
    },
    /// The Secret exists (created if need be) but its `password` key does not (`how` 0), is
    /// empty (1) or only white space (2).
    BreakSecret {
        ns: u8,
        secret: u8,
        how: u8,
    },
    Annotate {
        slot: u8,
        target: Target,
    },
    Pause {
        slot: u8,
    },
    Resume {
        slot: u8,
    },
    ReconcileNow {
        slot: u8,
    },
    SetDeletionPolicy {
        slot: u8,
        orphan: bool,
    },
    /// `deletionPolicy` removed: the account's default applies (`sales`: Orphan), else the
    /// operator's (Delete).
    ClearDeletionPolicy {
        slot: u8,
    },
    Delete {
        slot: u8,
    },
    DeleteNamespace {
        ns: u8,
        secrets_first: bool,
    },
    /// The next pass's object is changed by a user just before its k-th effect from now:
    /// the write the operator then sends carries a stale resourceVersion.
    Concurrent {
        in_effects: u8,
        edit: Edit,
    },
    /// The next 1–3 Kubernetes writes fail: 500 (nothing written), 504 before the write
    /// lands (nothing written), or 504 after it landed (written, the answer lost), or 429.
    KubeFault {
        kind: KubeFaultKind,
        count: u8,
    },
    /// The next 1–3 Kubernetes reads (GET of a Secret, of the CRD) fail: 500, 504 or 429
    /// (`Lost` is not generated: a read changes nothing).
    KubeReadFault {
        kind: KubeFaultKind,
        count: u8,
    },
    // ---- API behaviour
    Fault {
        call: Option<Call>,
        kind: FaultKind,
        count: u8,
    },
    /// A registration deleted outside the cluster.
    DeleteOutside {
        pick: u8,
    },
    /// A number registered outside the cluster, in workspace `WORKSPACES[ws]`.
    RegisterOutside {
        number: u8,
        ws: u8,
    },
    /// Workspace `WORKSPACES[ws]` answers every call with `code` (429, or 401: its key
    /// refused) until the world heals; the other accounts' objects must converge meanwhile.
    Storm {
        ws: u8,
        code: u16,
    },
    /// A field of a registration changed outside the cluster.
    DriftOutside {
        pick: u8,
        drift: Drift,
    },
    // ---- crashes
    /// The operator process dies at the k-th effect from now, before or after it.
    Crash {
        in_effects: u8,
        after: bool,
    },
    // ---- time
    Wait {
        secs: u32,
    },
}

fn slot() -> impl Strategy<Value = u8> {
    0u8..3
}

/// An agent OneInbox knows, in either spelling.
fn known_agent() -> impl Strategy<Value = Agent> {
    // Triage aid: MODEL_AGENTS=lower generates only lower-case spellings.
    let lower_only = std::env::var("MODEL_AGENTS").is_ok_and(|v| v == "lower");
    (0u8..3, any::<bool>()).prop_map(move |(idx, upper)| Agent {
        idx,
        upper: upper && !lower_only,
    })
}

/// The agent of a spec: sometimes one OneInbox does not know (its POST or PATCH is a 404).
fn agent() -> impl Strategy<Value = Agent> {
    prop_oneof![
        24 => known_agent(),
        1 => any::<bool>().prop_map(|upper| Agent { idx: 3, upper }),
    ]
}

fn drift() -> impl Strategy<Value = Drift> {
    prop_oneof![
        3 => known_agent().prop_map(Drift::Agent),
        1 => proptest::option::of(0u8..2).prop_map(Drift::FriendlyName),
        2 => proptest::option::of(known_agent()).prop_map(Drift::RoutingAgent),
        2 => proptest::option::of(known_agent()).prop_map(Drift::Fallback),
        2 => any::<bool>().prop_map(|failed| Drift::State { failed }),
        1 => any::<bool>().prop_map(Drift::Voicemail),
        1 => Just(Drift::NoRouting),
        1 => Just(Drift::Trunks),
    ]
}

fn creds() -> impl Strategy<Value = Creds> {
    prop_oneof![
        3 => (0u8..2).prop_map(Creds::Secret),
        2 => (0u8..2).prop_map(Creds::Stored),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Own),
        slot().prop_map(Target::Other),
        Just(Target::Unknown),
        (0u8..3).prop_map(Target::Existing),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => agent().prop_map(Edit::Agent),
        1 => proptest::option::of(0u8..2).prop_map(Edit::FriendlyName),
        1 => any::<bool>().prop_map(|orphan| Edit::DeletionPolicy { orphan }),
        1 => Just(Edit::Observe),
        1 => Just(Edit::ReconcileNow),
        1 => Just(Edit::Delete),
    ]
}

/// `spec.accountRef` of a create: the operator-wide key most often.
fn account_ref() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(0u8), 3 => Just(1), 2 => Just(2)]
}

fn account_action() -> impl Strategy<Value = AccountAction> {
    prop_oneof![
        2 => Just(AccountAction::Delete),
        2 => Just(AccountAction::Create),
        2 => any::<bool>().prop_map(|revoke_old| AccountAction::Rotate { revoke_old }),
        1 => Just(AccountAction::Revoke),
        1 => Just(AccountAction::DeleteKeySecret),
    ]
}

fn call() -> impl Strategy<Value = Option<Call>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Call::Register)),
        1 => Just(Some(Call::Get)),
        1 => Just(Some(Call::List)),
        1 => Just(Some(Call::Patch)),
        1 => Just(Some(Call::Delete)),
    ]
}

fn fault_kind() -> impl Strategy<Value = FaultKind> {
    prop_oneof![
        3 => prop_oneof![Just(500u16), Just(502), Just(503)]
            .prop_map(|code| FaultKind::Status { code, retry_after: None }),
        2 => (1u64..120).prop_map(|s| FaultKind::Status { code: 429, retry_after: Some(s) }),
        1 => Just(FaultKind::Status { code: 429, retry_after: None }),
        2 => Just(FaultKind::Status { code: 401, retry_after: None }),
        1 => Just(FaultKind::Status { code: 403, retry_after: None }),
        2 => prop_oneof![100u64..3000, 15_000u64..30_000].prop_map(|ms| FaultKind::Latency { ms }),
        2 => Just(FaultKind::CommitThenDrop),
        1 => Just(FaultKind::Drop),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    let user = prop_oneof![
        8 => (slot(), 0u8..2, creds(), agent(), proptest::option::of(0u8..2), (0u8..4, agent()), proptest::bool::weighted(0.25), proptest::bool::weighted(0.3), proptest::bool::weighted(0.2), proptest::bool::weighted(0.15), account_ref())
            .prop_map(|(slot, number, creds, agent, friendly_name, (routing, routing_agent), orphan, replace, import, observe, account)| Op::Create {
                slot, number, creds, agent, friendly_name, routing, routing_agent, orphan, replace, import, observe, account
            }),
        2 => (0u8..2, account_action()).prop_map(|(acct, action)| Op::Account { acct, action }),
        1 => (0u8..2, any::<bool>()).prop_map(|(ns, allowed)| Op::Grant { ns, allowed }),
        2 => (slot(), any::<bool>()).prop_map(|(slot, observe)| Op::SetManagement { slot, observe }),
        1 => (slot(), 0u8..6).prop_map(|(slot, value)| Op::SetPollInterval { slot, value }),
        2 => (slot(), agent()).prop_map(|(slot, agent)| Op::SetAgent { slot, agent }),
        1 => (slot(), proptest::option::of(0u8..2)).prop_map(|(slot, name)| Op::SetFriendlyName { slot, name }),
        1 => (slot(), 0u8..4, agent()).prop_map(|(slot, routing, agent)| Op::SetRouting { slot, routing, agent }),
        2 => (slot(), creds()).prop_map(|(slot, creds)| Op::SetCreds { slot, creds }),
        2 => (0u8..2, 0u8..2).prop_map(|(ns, secret)| Op::RotateSecret { ns, secret }),
        1 => (0u8..2, 0u8..2).prop_map(|(ns, secret)| Op::DeleteSecret { ns, secret }),
        1 => (0u8..2, 0u8..2, 0u8..3).prop_map(|(ns, secret, how)| Op::BreakSecret { ns, secret, how }),
        2 => (slot(), target()).prop_map(|(slot, target)| Op::Annotate { slot, target }),
        1 => slot().prop_map(|slot| Op::Pause { slot }),
        1 => slot().prop_map(|slot| Op::Resume { slot }),
        1 => slot().prop_map(|slot| Op::ReconcileNow { slot }),
        1 => (slot(), any::<bool>()).prop_map(|(slot, orphan)| Op::SetDeletionPolicy { slot, orphan }),
        1 => slot().prop_map(|slot| Op::ClearDeletionPolicy { slot }),
        3 => slot().prop_map(|slot| Op::Delete { slot }),
        1 => (0u8..2, any::<bool>()).prop_map(|(ns, secrets_first)| Op::DeleteNamespace { ns, secrets_first }),
        4 => (0u8..6, edit()).prop_map(|(in_effects, edit)| Op::Concurrent { in_effects, edit }),
    ];
    let api = prop_oneof![
        6 => (call(), fault_kind(), 1u8..4).prop_map(|(call, kind, count)| Op::Fault { call, kind, count }),
        // Refused for the request's content: only a POST or PATCH has any.
        1 => (any::<bool>(), prop_oneof![Just(400u16), Just(422)], proptest::bool::weighted(0.7))
            .prop_map(|(patch, code, echo)| Op::Fault {
                call: Some(if patch { Call::Patch } else { Call::Register }),
                kind: FaultKind::Rejected { code, echo },
                count: 1,
            }),
        1 => (0u8..3).prop_map(|pick| Op::DeleteOutside { pick }),
        1 => (0u8..2, prop_oneof![3 => Just(0u8), 1 => Just(1), 1 => Just(2)])
            .prop_map(|(number, ws)| Op::RegisterOutside { number, ws }),
        1 => (prop_oneof![1 => Just(0u8), 2 => Just(1), 2 => Just(2)], prop_oneof![Just(429u16), Just(401)])
            .prop_map(|(ws, code)| Op::Storm { ws, code }),
        2 => ((0u8..3), drift()).prop_map(|(pick, drift)| Op::DriftOutside { pick, drift }),
        2 => (prop_oneof![
                Just(KubeFaultKind::Error),
                Just(KubeFaultKind::Timeout),
                Just(KubeFaultKind::Lost),
                Just(KubeFaultKind::Throttled),
            ], 1u8..4)
            .prop_map(|(kind, count)| Op::KubeFault { kind, count }),
        1 => (prop_oneof![
                Just(KubeFaultKind::Error),
                Just(KubeFaultKind::Timeout),
                Just(KubeFaultKind::Throttled),
            ], 1u8..4)
            .prop_map(|(kind, count)| Op::KubeReadFault { kind, count }),
    ];
    let crash =
        (0u8..12, any::<bool>()).prop_map(|(in_effects, after)| Op::Crash { in_effects, after });
    let wait = prop_oneof![1u32..30, 30u32..900].prop_map(|secs| Op::Wait { secs });
    prop_oneof![
        10 => user,
        4 => api,
        3 => crash,
        2 => wait,
    ]
}

/// A case: up to `max_len` steps.
pub fn sequence(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=max_len)
}
