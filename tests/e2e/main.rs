//! End-to-end tests against the real control plane (`make cluster-up`), the real
//! `oneinbox-mock` and the real `oneinbox-operator` binary.

// Test support code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod harness;

mod accounts;
mod chaos;
mod cluster;
mod crash;
mod credentials;
mod deletion;
mod docs;
mod errors;
mod faults;
mod fencing;
mod flux;
mod gitops;
mod helm_crds;
mod helm_values;
mod import;
mod lifecycle;
mod observe;
mod paths;
mod process;
mod rbac;
mod secret_access;
mod uninstall;
mod updates;
mod validation;
