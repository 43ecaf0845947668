//! The optional state file: registrations as JSON, written atomically (temp file + rename) so
//! that a killed mock never leaves a torn file. `Registration` has no password field, so the
//! password cannot be written.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MockError;
use super::state::Registration;

/// Bumped if the layout changes incompatibly.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    registrations: Vec<Registration>,
}

/// Encodes registrations as the state file's content.
pub fn encode(records: &[Registration]) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct Out<'a> {
        version: u32,
        registrations: &'a [Registration],
    }
    serde_json::to_vec_pretty(&Out {
        version: VERSION,
        registrations: records,
    })
}

/// Decodes the state file's content.
pub fn decode(bytes: &[u8]) -> Result<Vec<Registration>, serde_json::Error> {
    serde_json::from_slice::<StateFile>(bytes).map(|f| f.registrations)
}

/// Loads registrations; a missing file is an empty start.
pub fn load(path: &Path) -> Result<Vec<Registration>, MockError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map_err(|source| MockError::ParseState {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
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
pub async fn save(path: &Path, records: &[Registration]) -> io::Result<()> {
    let bytes = encode(records).map_err(io::Error::other)?;
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
        save(&path, &records).await.unwrap();
        assert_eq!(load(&path).unwrap(), records);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"auth_password_set\": true"));
        assert!(!text.contains("\"auth_password\""));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(load(&path), Err(MockError::ParseState { .. })));
    }
}
