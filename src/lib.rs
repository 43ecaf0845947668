//! oneinbox-operator: manages OneInbox phone numbers as `PhoneNumber` custom resources.

pub mod accounts;
pub mod admin;
pub mod conditions;
pub mod config;
pub mod controller;
pub mod crd;
pub mod definition;
pub mod error;
pub mod import;
pub mod leader;
pub mod metrics;
pub mod mutex;
pub mod oneinbox;
pub mod relists;
pub mod secrets;
pub mod telemetry;
pub mod watch_list;
