//! The optional state file: every workspace's registrations as JSON, written atomically (temp
//! file + rename) so that a killed mock never leaves a torn file. `Registration` has no password
//! field, so the password cannot be written; keys are not written either.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Serialize};

use super::MockError;
use super::state::Registration;
use super::workspace::DEFAULT;

/// Version 1 held one store (`registrations`); version 2 holds one per workspace.
const VERSION: u32 = 2;

/// Registrations by workspace name.
pub type Snapshot = BTreeMap<String, Vec<Registration>>;

#[derive(Debug, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    registrations: Option<Vec<Registration>>,
    #[serde(default)]
    workspaces: Option<Snapshot>,
}

/// Encodes registrations as the state file's content.
pub fn encode(workspaces: &Snapshot) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct Out<'a> {
        version: u32,
        workspaces: &'a Snapshot,
    }
    serde_json::to_vec_pretty(&Out {
        version: VERSION,
        workspaces,
    })
}

/// Decodes the state file's content; a version 1 file is the `default` workspace.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, serde_json::Error> {
    let file: StateFile = serde_json::from_slice(bytes)?;
    match (file.version, file.registrations, file.workspaces) {
        (1, Some(records), None) => Ok(BTreeMap::from([(DEFAULT.to_owned(), records)])),
        (2, None, Some(workspaces)) => Ok(workspaces),
        (version, _, _) => Err(serde_json::Error::custom(format!(
            "version {version} with unexpected content (expected 1 with \"registrations\" \
             or 2 with \"workspaces\")"
        ))),
    }
}

/// Loads registrations; a missing file is an empty start.
pub fn load(path: &Path) -> Result<Snapshot, MockError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map_err(|source| MockError::ParseState {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Snapshot::new()),
        Err(source) => Err(MockError::ReadState {
            path: path.to_owned(),
            source,
        }),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(name)
}

/// Writes registrations atomically next to `path` (on the blocking pool: plain file IO).
pub async fn save(path: &Path, workspaces: &Snapshot) -> io::Result<()> {
    let bytes = encode(workspaces).map_err(io::Error::other)?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
        .await
        .map_err(io::Error::other)?
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        // Leave no stray temp file behind; the rename error is what matters.
        std::fs::remove_file(&tmp).ok();
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use crate::validate::{CreateInput, Provider, ProviderConfigInput};

    fn store_with_one() -> Store {
        let mut s = Store::default();
        s.create(
            CreateInput {
                phone_number: "+15550001".to_owned(),
                provider: Provider::Twilio,
                agent_id: uuid::Uuid::new_v4(),
                friendly_name: None,
                provider_config: Some(ProviderConfigInput {
                    trunk_address: Some("t.pstn.twilio.com".to_owned()),
                    auth_username: Some("user".to_owned()),
                    auth_password_set: true,
                    extra: serde_json::Map::new(),
                }),
                inbound_routing: None,
                credential_id: None,
            },
            jiff::Timestamp::now(),
            None,
        )
        .unwrap();
        s
    }

    #[tokio::test]
    async fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_empty());
        let store = store_with_one();
        let records: Vec<Registration> = store.ordered().into_iter().cloned().collect();
        let snapshot = Snapshot::from([
            (DEFAULT.to_owned(), Vec::new()),
            ("team-a".to_owned(), records),
        ]);
        save(&path, &snapshot).await.unwrap();
        assert_eq!(load(&path).unwrap(), snapshot);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"auth_password_set\": true"));
        assert!(!text.contains("\"auth_password\""));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn a_version_1_file_is_the_default_workspace() {
        let records: Vec<Registration> = store_with_one().ordered().into_iter().cloned().collect();
        let v1 = serde_json::to_vec(&serde_json::json!({"version": 1, "registrations": records}))
            .unwrap();
        assert_eq!(
            decode(&v1).unwrap(),
            Snapshot::from([(DEFAULT.to_owned(), records)])
        );
        for bad in [
            r#"{"version": 1, "workspaces": {}}"#,
            r#"{"version": 2, "registrations": []}"#,
            r#"{"version": 3, "workspaces": {}}"#,
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(load(&path), Err(MockError::ParseState { .. })));
    }
}
