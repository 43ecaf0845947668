//! Mocked-apiserver scenarios (tower-test) for crash points a real server cannot produce on demand.
