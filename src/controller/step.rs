//! The steps of a pass: what `decide` yields and `act` carries out, as data (so the decision
//! table is a table test).

use std::time::Duration;

use super::credentials::Credentials;
use super::plan::PatchableDigest;
use super::status::{Phase, StatusData};
use crate::oneinbox::{ApiError, PatchRequest, Registration};

/// A read the pass needs before it can decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The tenant API key (or learn that the operator-wide one applies).
    ApiKey,
    /// The SIP password Secret, or the stored credential id.
    Credentials,
    /// `GET /v1/phone-numbers/{id}`.
    Registration(String),
    /// `GET /v1/phone-numbers?phone_number=`.
    LookupByNumber,
    /// The PhoneNumber CRD's metadata: whether it is being deleted (`Definition`).
    Definition,
}

/// Which OneInbox call failed (for the error and its metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Register,
    Get,
    Lookup,
    Update,
    Deregister,
}

/// A OneInbox failure the pass ends with (the controller's backoff retries it).
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub op: Op,
    pub error: ApiError,
}

impl Failure {
    /// The error the pass ends with.
    pub fn to_error(&self) -> crate::error::Error {
        use crate::error::Error;
        let e = self.error.clone();
        match self.op {
            Op::Register => Error::RegisterNumber(e),
            Op::Get => Error::GetNumber(e),
            Op::Lookup => Error::LookupNumber(e),
            Op::Update => Error::UpdateNumber(e),
            Op::Deregister => Error::DeregisterNumber(e),
        }
    }
}

/// How a pass that reports a status ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Then {
    /// Wait for a change (a watch event, a Secret, the drift sweep).
    AwaitChange,
    Requeue(Duration),
    /// Go on deciding (the report is a step on the way, e.g. `Deleting`).
    Continue,
    /// End with this failure: the controller's error policy backs off.
    Fail(Failure),
    /// The registration is checked and in line with the spec of `generation`: remember it,
    /// and let the drift sweep bring the object back.
    Checked {
        id: String,
        patchable: PatchableDigest,
        generation: Option<i64>,
        /// An invalid `oneinbox.ai/poll-interval` value not reported yet: say so in a Warning.
        warn_poll_interval: Option<String>,
    },
}

/// The next thing a pass does.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Read something first.
    Read(Read),
    /// Write this status (only if it changed; a Warning when it becomes Stalled for a new
    /// reason), then end as `then` says.
    Report {
        data: StatusData,
        phase: Phase,
        then: Then,
    },
    /// End the pass and write nothing: wait, requeue, or fail (a 429 says nothing about the
    /// object).
    Done(DoneAfter),
    /// Update this process's memory of the object (no write), then take `then`.
    Remember { memo: Memo, then: Box<Step> },
    /// Deliberate adoption of the registration the annotation names: finalizer first (guarded
    /// by the resourceVersion), then an `Adopted` event. `takeover`: the object already
    /// mirrored it under `managementPolicy: Observe` and is now switched to Full.
    Adopt { id: String, takeover: bool },
    /// The registration is gone from OneInbox: a `RegistrationLost` Warning, then register again.
    /// `unmirror`: the id annotation is the operator's mirror of the status id: it goes too,
    /// so no object keeps claiming the number with an id that no longer exists.
    ReportLost { id: String, unmirror: bool },
    /// The credentials changed and `replacementPolicy: Replace`: `Replacing` event, DELETE.
    Replace { id: String },
    /// Register: finalizer and pending marker (guarded) unless a marker is there, then POST.
    Register {
        credentials: Credentials,
        hash: String,
        marker_present: bool,
        /// Registering again (the registration was lost or replaced): the status to write
        /// first, guarded like the marker, without the old ids, so that no id names a
        /// registration that is gone while the attempt is in flight.
        drop_old_ids: Option<Box<(StatusData, Phase)>>,
    },
    /// Write the new registration's ids right away, with an event.
    Persist {
        registration: Registration,
        data: Box<StatusData>,
        phase: Phase,
        event: (&'static str, String),
    },
    /// One PATCH with only the changed fields; once it succeeds, an `Updated`,
    /// `DriftCorrected` or `UpdatedOnAdoption` event (reason, note).
    Patch {
        id: String,
        patch: PatchRequest,
        event: (&'static str, String),
    },
    /// Mirror the id into the annotation (the durable copy).
    Annotate { id: String },
    /// `managementPolicy: Observe` on an object with the finalizer (switched from Full):
    /// remove it, so that deleting the object never deregisters, with an `ObserveOnly` event.
    Disown,
    // ---- deletion
    /// `deletionPolicy: Orphan` (or `managementPolicy: Observe`, or the CRD being deleted,
    /// named in `because`): remove the finalizer, `Orphaned` event.
    Orphan {
        what: String,
        because: &'static str,
        /// The spec field and value this decision rests on, if one: the finalizer goes only
        /// while the object still says so.
        unless_changed: Option<(&'static str, &'static str)>,
    },
    /// `DELETE /v1/phone-numbers/{id}`.
    Deregister { id: String },
    /// Remove the finalizer, with an event if there is one. `released` is the registration
    /// this process deregistered (a retry then only removes the finalizer).
    Release {
        released: Option<String>,
        event: Option<(&'static str, String)>,
    },
    /// Deletion cannot finish: `DeletionBlocked`, and back off.
    Blocked {
        cause: String,
        failure: Option<Failure>,
    },
}

impl Step {
    /// The kind of step, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Read(Read::ApiKey) => "read api key",
            Step::Read(Read::Credentials) => "read credentials",
            Step::Read(Read::Registration(_)) => "get registration",
            Step::Read(Read::LookupByNumber) => "look up number",
            Step::Read(Read::Definition) => "read the crd",
            Step::Report { .. } => "report",
            Step::Done(DoneAfter::Failure(_)) => "fail",
            Step::Done(_) => "done",
            Step::Adopt { .. } => "adopt",
            Step::ReportLost { .. } => "report lost",
            Step::Replace { .. } => "replace",
            Step::Register { .. } => "register",
            Step::Persist { .. } => "persist",
            Step::Patch { .. } => "patch",
            Step::Annotate { .. } => "annotate",
            Step::Disown => "disown",
            Step::Remember { memo, .. } => match memo {
                Memo::CleanRefusal { .. } => "remember clean refusal",
                Memo::ForgetCheck => "forget check",
                Memo::Resumed { .. } => "resume",
            },
            Step::Orphan { .. } => "orphan",
            Step::Deregister { .. } => "deregister",
            Step::Release { .. } => "release",
            Step::Blocked { .. } => "blocked",
        }
    }
}

/// How a pass that writes nothing ends.
#[derive(Clone, Debug, PartialEq)]
pub enum DoneAfter {
    AwaitChange,
    Requeue(Duration),
    /// With this failure: the controller's error policy backs off.
    Failure(Failure),
}

/// What a pass records in this process's memory of the object (never on the object).
#[derive(Clone, Debug, PartialEq)]
pub enum Memo {
    /// A clean 429 refused this pending attempt: the next attempt posts without a look-up.
    CleanRefusal { token: String },
    /// Forget the last check: what the API holds is no longer known.
    ForgetCheck,
    /// After a restart, the status records this very input: trust it as the last check, with
    /// the first drift check in `first_check_in` (spread over the interval).
    Resumed {
        id: String,
        generation: Option<i64>,
        first_check_in: Option<Duration>,
        remote: PatchableDigest,
    },
}

/// Why an object is orphaned while its CRD is being deleted (the event's and the log's words).
pub const DEFINITION_DELETING: &str = "the PhoneNumber CRD is being deleted";
