//! End-to-end tests against the real control plane (`make cluster-up`), the real
//! `oneinbox-mock` and the real `oneinbox-operator` binary.

mod harness;

mod crash;
mod deletion;
mod errors;
mod faults;
mod lifecycle;
mod validation;
