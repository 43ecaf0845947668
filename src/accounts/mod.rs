//! Accounts: which OneInbox credentials and request budget a PhoneNumber uses, and whether its
//! namespace may use them (docs/tenancy.md).
//!
//! `crd` holds the two resources, `registry` what this process knows of each account (its key,
//! its budget's client, its gate), `controller` the accounts' own reconciler. The decisions
//! here are pure: which account an object names, and whether an account allows a namespace.

pub mod controller;

pub mod registry;
pub mod stores;

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use crate::crd::accounts::AllowedNamespaces;

/// Whether `allowed` lets namespace `name` (with `labels`) use a ClusterOneInboxAccount.
/// `Err` is the rule in words, for the AccountNotAllowed message.
pub fn allows(
    allowed: &AllowedNamespaces,
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    if allowed.names.iter().any(|n| n == name) {
        return Ok(());
    }
    let selector = allowed.selector.clone().map(Selector::try_from).transpose();
    let matched = match (&selector, labels) {
        (Ok(Some(s)), Some(labels)) => s.matches(labels),
        (Ok(Some(s)), None) => s.selects_all(),
        _ => false,
    };
    if matched {
        return Ok(());
    }
    Err(rule_text(allowed, selector.ok().flatten()))
}

/// "namespaces labelled team=voice, or named a, b".
fn rule_text(allowed: &AllowedNamespaces, selector: Option<Selector>) -> String {
    let mut parts = Vec::new();
    match (&allowed.selector, selector) {
        (Some(_), Some(s)) if s.selects_all() => parts.push("every namespace".to_owned()),
        (Some(_), Some(s)) => parts.push(format!("namespaces labelled {s}")),
        (Some(_), None) => parts.push("no namespace (its selector is invalid)".to_owned()),
        (None, _) => {}
    }
    if !allowed.names.is_empty() {
        parts.push(format!("namespaces named {}", allowed.names.join(", ")));
    }
    if parts.is_empty() {
        return "no namespace".to_owned();
    }
    parts.join(", or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn by_label(k: &str, v: &str) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(labels(&[(k, v)])),
            match_expressions: None,
        })
    }

    #[test]
    fn namespace_rules() {
        let voice = AllowedNamespaces {
            selector: by_label("team", "voice"),
            names: vec![],
        };
        let named = AllowedNamespaces {
            selector: None,
            names: vec!["a".into(), "b".into()],
        };
        let both = AllowedNamespaces {
            selector: by_label("team", "voice"),
            names: vec!["ops".into()],
        };
        let everyone = AllowedNamespaces {
            selector: Some(LabelSelector::default()),
            names: vec![],
        };
        let not_in = AllowedNamespaces {
            selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["restricted".into()]),
                }]),
            }),
            names: vec![],
        };
        let voice_labels = labels(&[("team", "voice"), ("x", "y")]);
        let other_labels = labels(&[("team", "data")]);
        let restricted = labels(&[("tier", "restricted")]);
        type Row<'a> = (
            &'a str,
            &'a AllowedNamespaces,
            &'a str,
            Option<&'a BTreeMap<String, String>>,
            Result<(), &'a str>,
        );
        let rows: Vec<Row<'_>> = vec![
            ("label matches", &voice, "n", Some(&voice_labels), Ok(())),
            (
                "label differs",
                &voice,
                "n",
                Some(&other_labels),
                Err("namespaces labelled team=voice"),
            ),
            (
                "namespace not known yet",
                &voice,
                "n",
                None,
                Err("namespaces labelled team=voice"),
            ),
            ("named", &named, "b", None, Ok(())),
            (
                "not named",
                &named,
                "c",
                Some(&voice_labels),
                Err("namespaces named a, b"),
            ),
            (
                "named though not labelled",
                &both,
                "ops",
                Some(&other_labels),
                Ok(()),
            ),
            (
                "neither",
                &both,
                "x",
                Some(&other_labels),
                Err("namespaces labelled team=voice, or namespaces named ops"),
            ),
            (
                "empty selector",
                &everyone,
                "any",
                Some(&other_labels),
                Ok(()),
            ),
            (
                "empty selector, labels unknown",
                &everyone,
                "any",
                None,
                Ok(()),
            ),
            (
                "NotIn, label absent",
                &not_in,
                "n",
                Some(&other_labels),
                Ok(()),
            ),
            (
                "NotIn, label excluded",
                &not_in,
                "n",
                Some(&restricted),
                Err("namespaces labelled tier notin (restricted)"),
            ),
        ];
        for (what, allowed, ns, labels, want) in rows {
            assert_eq!(
                allows(allowed, ns, labels),
                want.map_err(str::to_owned),
                "{what}"
            );
        }
    }
}
