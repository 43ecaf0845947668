//! The SIP credentials a pass resolved, and their keyed hash in `status.credentialsHash`: an
//! HMAC under a key only the operator holds, so that a credentials change is seen without ever
//! storing the password or a plain hash of it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::oneinbox::SecretString;

/// The SIP credentials as resolved for one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Credentials {
    Sip {
        trunk_address: String,
        auth_username: String,
        auth_password: SecretString,
    },
    Stored {
        credential_id: String,
    },
}

/// The key of the credentials hash: derived from a secret only the operator holds (never from
/// anything a reader of the object sees), with a short id stored in each hash. A hash made
/// with another key id is a new baseline, never a credentials change.
#[derive(Clone)]
pub struct HashKey {
    id: String,
    key: Vec<u8>,
}

impl HashKey {
    /// The key derived from `secret` (the `--credentials-hash-key-file`, or the operator's API
    /// key).
    pub fn derive(secret: &[u8]) -> HashKey {
        let key = hmac(secret, &[b"oneinbox-operator/credentials-hash/v2"]);
        let id = hex::encode(&hmac(&key, &[b"key-id"])[..4]);
        HashKey { id, key }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashKey({}, [redacted])", self.id)
    }
}

/// HMAC-SHA256 of the length-prefixed `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    #[allow(clippy::expect_used)] // HMAC accepts keys of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Keyed hash of everything whose change needs a re-registration, as
/// `hmac-sha256:<key id>:<hex>`. The object's UID is part of the input, so the same password
/// in two objects gives unrelated hashes; the status never holds the value or a plain hash.
pub fn credentials_hash(key: &HashKey, uid: &str, creds: &Credentials) -> String {
    let mac = match creds {
        Credentials::Sip {
            trunk_address,
            auth_username,
            auth_password,
        } => hmac(
            &key.key,
            &[
                uid.as_bytes(),
                b"sip",
                trunk_address.as_bytes(),
                auth_username.as_bytes(),
                auth_password.expose().as_bytes(),
            ],
        ),
        Credentials::Stored { credential_id } => hmac(
            &key.key,
            &[uid.as_bytes(), b"integration", credential_id.as_bytes()],
        ),
    };
    format!("hmac-sha256:{}:{}", key.id, hex::encode(mac))
}

/// The key id a stored hash was made with; `None` for the older form without one.
pub fn hash_key_id(hash: &str) -> Option<&str> {
    let rest = hash.strip_prefix("hmac-sha256:")?;
    let (id, mac) = rest.split_once(':')?;
    (!id.is_empty() && !mac.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hash_is_keyed_by_the_operator_and_hides_the_password() {
        let sip = |pw: &str| Credentials::Sip {
            trunk_address: "t".into(),
            auth_username: "u".into(),
            auth_password: SecretString::new(pw.into()),
        };
        let key = HashKey::derive(b"oi_sk_operator");
        let h1 = credentials_hash(&key, "uid-1", &sip("secret-pw"));
        assert_eq!(h1, credentials_hash(&key, "uid-1", &sip("secret-pw")));
        assert_ne!(h1, credentials_hash(&key, "uid-2", &sip("secret-pw")));
        assert_ne!(h1, credentials_hash(&key, "uid-1", &sip("other-pw")));
        // Whoever reads the object knows its UID, not the operator's key.
        let other = HashKey::derive(b"someone-else");
        assert_ne!(h1, credentials_hash(&other, "uid-1", &sip("secret-pw")));
        assert_ne!(key.id(), other.id());
        assert_eq!(hash_key_id(&h1), Some(key.id()));
        assert_eq!(
            hash_key_id("hmac-sha256:0123abcd"),
            None,
            "the older form has no key id"
        );
        assert!(!h1.contains("secret-pw"));
        assert!(!format!("{key:?}").contains("oi_sk_operator"));
        // Not a plain hash of the password.
        use sha2::Digest;
        assert!(!h1.contains(&hex::encode(sha2::Sha256::digest(b"secret-pw"))));
    }
}
