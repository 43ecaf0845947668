//! The operator's error type. Variants name the operation that failed; each has a fixed metric
//! label and says whether a retry with backoff can help.

use std::time::Duration;

use crate::oneinbox::ApiError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("registering the number with OneInbox failed: {0}")]
    RegisterNumber(#[source] ApiError),
    #[error("reading the registration from OneInbox failed: {0}")]
    GetNumber(#[source] ApiError),
    #[error("looking the number up in OneInbox failed: {0}")]
    LookupNumber(#[source] ApiError),
    #[error("updating the registration in OneInbox failed: {0}")]
    UpdateNumber(#[source] ApiError),
    #[error("deregistering the number from OneInbox failed: {0}")]
    DeregisterNumber(#[source] ApiError),
    #[error("writing the PhoneNumber status failed: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("updating the PhoneNumber metadata failed: {0}")]
    PatchMetadata(#[source] kube::Error),
    #[error("reading Secret {name} failed: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the PhoneNumber CRD failed: {0}")]
    ReadDefinition(#[source] kube::Error),
    #[error("a Kubernetes call timed out after {0:?}")]
    KubeTimeout(Duration),
    #[error("deletion blocked: {0}")]
    DeletionBlocked(String),
    #[error("the object is missing {0}")]
    InvalidObject(&'static str),
    /// The cache's packed copy of the object did not decode (`crd::cached`).
    #[error("the cached copy of the object could not be unpacked")]
    Unpack,
    #[error("the reconciler took {0} steps without finishing a pass")]
    Undecided(usize),
}

impl Error {
    /// Fixed label for the failure metric (closed set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::RegisterNumber(_) => "register_number",
            Error::GetNumber(_) => "get_number",
            Error::LookupNumber(_) => "lookup_number",
            Error::UpdateNumber(_) => "update_number",
            Error::DeregisterNumber(_) => "deregister_number",
            Error::PatchStatus(_) => "patch_status",
            Error::PatchMetadata(_) => "patch_metadata",
            Error::ReadSecret { .. } => "read_secret",
            Error::ReadDefinition(_) => "read_definition",
            Error::KubeTimeout(_) => "kube_timeout",
            Error::DeletionBlocked(_) => "deletion_blocked",
            Error::InvalidObject(_) => "invalid_object",
            Error::Unpack => "unpack",
            Error::Undecided(_) => "undecided",
        }
    }

    /// The OneInbox error inside, if this is one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::RegisterNumber(e)
            | Error::GetNumber(e)
            | Error::LookupNumber(e)
            | Error::UpdateNumber(e)
            | Error::DeregisterNumber(e) => Some(e),
            _ => None,
        }
    }

    /// The wait the OneInbox API asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.api_error().and_then(ApiError::retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_snake_case_operation_names() {
        let e = Error::RegisterNumber(ApiError::NotFound);
        assert_eq!(e.metric_label(), "register_number");
        assert!(e.to_string().starts_with("registering the number"));
    }
}
