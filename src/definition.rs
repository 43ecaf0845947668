//! Whether one of the operator's CRDs is being deleted. Deleting a CRD deletes every object of
//! its kind: an uninstall, never a user's wish to release each number. While it lasts, a
//! PhoneNumber's deletion orphans its registration, and an account's in-use finalizer lets go
//! (Google Config Connector's rule for the same case).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PartialObjectMeta};
use kube::{Client, Resource};

/// A CRD, as a deletion sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Definition {
    /// Served as usual: a deletion is the user's.
    Served,
    /// Being deleted, or gone: every object of the kind goes with it.
    Deleting,
    /// Not readable by this operator (no RBAC to get it): the deletion goes as it would
    /// without this check.
    Unreadable,
}

/// The name of `K`'s CRD (`<plural>.<group>`).
pub fn name_of<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}

/// Read the CRD's metadata now: a deletion goes by what the API server says at this moment,
/// not by a watch that may lag the CRD's deletion.
pub async fn read(client: Client, name: &str) -> Result<Definition, kube::Error> {
    let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client);
    match api.get_metadata_opt(name).await {
        Ok(Some(crd)) => Ok(classify(crd.metadata.deletion_timestamp.is_some(), true)),
        Ok(None) => Ok(classify(false, false)),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Definition::Unreadable),
        Err(e) => Err(e),
    }
}

/// A CRD that exists and is not being deleted is served; one being deleted, or already gone
/// while an object of its kind is still seen, is an uninstall.
fn classify(being_deleted: bool, exists: bool) -> Definition {
    if exists && !being_deleted {
        Definition::Served
    } else {
        Definition::Deleting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PhoneNumber;
    use crate::crd::accounts::{ClusterOneInboxAccount, OneInboxAccount};

    #[test]
    fn a_crd_is_an_uninstall_while_being_deleted_or_gone() {
        for (being_deleted, exists, want) in [
            (false, true, Definition::Served),
            (true, true, Definition::Deleting),
            (false, false, Definition::Deleting),
        ] {
            assert_eq!(
                classify(being_deleted, exists),
                want,
                "{being_deleted} {exists}"
            );
        }
    }

    #[test]
    fn names_are_the_crd_files_names() {
        assert_eq!(name_of::<PhoneNumber>(), "phonenumbers.oneinbox.ai");
        assert_eq!(name_of::<OneInboxAccount>(), "oneinboxaccounts.oneinbox.ai");
        assert_eq!(
            name_of::<ClusterOneInboxAccount>(),
            "clusteroneinboxaccounts.oneinbox.ai"
        );
    }
}
