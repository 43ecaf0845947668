//! oneinbox-operator: manages OneInbox phone numbers as `PhoneNumber` custom resources.

#[cfg(feature = "mock-server")]
pub mod mock_oneinbox;
