//! `status.secretVersions`: Secret name → resourceVersion, a JSON object on the wire.
//!
//! An object references one Secret (the schema allows one property), and a `BTreeMap` of one
//! entry is a whole B-tree leaf, about 0.6 KiB, in each cached object: 6 MiB at 10,000 objects.
//! A sorted `Vec` of the pairs is one 48-byte allocation and reads the same.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Secret name → resourceVersion, sorted by name, each name once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretVersionMap(Vec<(String, String)>);

impl SecretVersionMap {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|i| self.0[i].1.as_str())
    }

    /// Set `name`'s version (the last one set wins, as in a JSON object).
    pub fn insert(&mut self, name: String, version: String) {
        match self.find(&name) {
            Ok(i) => self.0[i].1 = version,
            Err(i) => {
                // Exactly: the usual doubling would give one entry room for four.
                self.0.reserve_exact(1);
                self.0.insert(i, (name, version))
            }
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(name, _)| keep(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }
}

impl Extend<(String, String)> for SecretVersionMap {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, pairs: I) {
        for (name, version) in pairs {
            self.insert(name, version);
        }
    }
}

impl FromIterator<(String, String)> for SecretVersionMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> SecretVersionMap {
        let mut map = SecretVersionMap::default();
        map.extend(pairs);
        map
    }
}

impl Serialize for SecretVersionMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, version) in &self.0 {
            map.serialize_entry(name, version)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SecretVersionMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretVersionMap, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = SecretVersionMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of Secret names to resourceVersions")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<SecretVersionMap, A::Error> {
                let mut map = SecretVersionMap(Vec::with_capacity(a.size_hint().unwrap_or(0)));
                while let Some((name, version)) = a.next_entry::<String, String>()? {
                    map.insert(name, version);
                }
                Ok(map)
            }
        }
        d.deserialize_map(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_a_json_object_sorted_by_name() {
        let map: SecretVersionMap =
            serde_json::from_value(json!({"b": "2", "a": "1", "c": "3"})).unwrap();
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "2"), ("c", "3")]
        );
        assert_eq!(
            serde_json::to_value(&map).unwrap(),
            json!({"a": "1", "b": "2", "c": "3"})
        );
        let empty: SecretVersionMap = serde_json::from_value(json!({})).unwrap();
        assert!(empty.is_empty());
        assert!(serde_json::from_value::<SecretVersionMap>(json!(["a"])).is_err());
        assert!(serde_json::from_value::<SecretVersionMap>(json!({"a": 1})).is_err());
    }

    #[test]
    fn a_name_is_kept_once_with_its_last_version() {
        let mut map: SecretVersionMap = [("sip".into(), "7".into()), ("sip".into(), "8".into())]
            .into_iter()
            .collect();
        assert_eq!((map.len(), map.get("sip")), (1, Some("8")));
        map.extend([("a".to_string(), "1".to_string())]);
        assert_eq!(map.get("a"), Some("1"));
        assert_eq!(map.get("b"), None);
        map.retain(|name| name == "sip");
        assert_eq!(map.iter().collect::<Vec<_>>(), [("sip", "8")]);
        // Equal maps compare equal whatever order they were built in.
        let other: SecretVersionMap = [("sip".into(), "8".into())].into_iter().collect();
        assert_eq!(map, other);
    }

    #[test]
    fn one_entry_is_one_small_allocation() {
        // The reason for the type: a one-entry BTreeMap's leaf is over 500 bytes.
        let map: SecretVersionMap = [("sip".into(), "7".into())].into_iter().collect();
        assert_eq!(map.0.capacity(), 1);
        let read: SecretVersionMap = serde_json::from_value(json!({"sip": "7"})).unwrap();
        assert_eq!(read.0.capacity(), 1);
        assert_eq!(std::mem::size_of::<(String, String)>(), 48);
    }
}
