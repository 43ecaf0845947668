//! Fault injection: the replaceable fault configuration, the token-bucket rate limiter and the
//! queue of one-shot faults. Everything here is pure (time is passed in) so it is unit-tested
//! without a server.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Endpoint key of register.
pub const CREATE: &str = "POST /v1/phone-numbers";
/// Endpoint key of list.
pub const LIST: &str = "GET /v1/phone-numbers";
/// Endpoint key of read-one.
pub const GET: &str = "GET /v1/phone-numbers/{phone_id}";
/// Endpoint key of update.
pub const PATCH: &str = "PATCH /v1/phone-numbers/{phone_id}";
/// Endpoint key of release.
pub const DELETE: &str = "DELETE /v1/phone-numbers/{phone_id}";

/// The endpoint keys the mock serves; config overrides and one-shot faults must name one of
/// them, so that a typo fails loudly instead of silently never matching.
pub const SERVED_ENDPOINTS: [&str; 5] = [CREATE, LIST, GET, PATCH, DELETE];

/// How a 429 states its `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryAfterFormat {
    /// Delta-seconds, e.g. `Retry-After: 3`.
    #[default]
    Seconds,
    /// An IMF-fixdate, e.g. `Retry-After: Tue, 07 Nov 2023 05:31:59 GMT`.
    HttpDate,
}

impl FromStr for RetryAfterFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seconds" => Ok(Self::Seconds),
            "http-date" => Ok(Self::HttpDate),
            other => Err(format!(
                "unknown retry-after format {other:?} (expected seconds or http-date)"
            )),
        }
    }
}

impl fmt::Display for RetryAfterFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Seconds => "seconds",
            Self::HttpDate => "http-date",
        })
    }
}

/// The status a registration reaches once its provisioning delay has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisioningOutcome {
    /// Provisioning succeeded.
    #[default]
    Active,
    /// Provisioning failed.
    Failed,
}

impl ProvisioningOutcome {
    /// The `status` string the outcome stands for.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for ProvisioningOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "failed" => Ok(Self::Failed),
            other => Err(format!(
                "unknown provisioning outcome {other:?} (expected active or failed)"
            )),
        }
    }
}

impl fmt::Display for ProvisioningOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-endpoint override of the four random-fault fields; an absent field keeps the global one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFaults {
    /// Added delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Upper bound of a uniform extra delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_jitter_ms: Option<u64>,
    /// Probability (0.0–1.0) of answering `error_status` instead of acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Status of a random error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
}

/// The whole fault configuration of `GET`/`PUT /_mock/config`. A PUT replaces it whole, so
/// every field has a default and an omitted field resets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Added delay in milliseconds for every counted request.
    pub latency_ms: u64,
    /// Upper bound of a uniform extra delay in milliseconds.
    pub latency_jitter_ms: u64,
    /// Probability (0.0–1.0) of answering `error_status` instead of acting.
    pub error_rate: f64,
    /// Status of a random error.
    pub error_status: u16,
    /// Overrides keyed by endpoint key, e.g. `"PATCH /v1/phone-numbers/{phone_id}"`.
    pub endpoints: BTreeMap<String, EndpointFaults>,
    /// Token refill rate; `None` or 0 disables rate limiting.
    pub rate_limit_rps: Option<f64>,
    /// Bucket size; defaults to `ceil(rate_limit_rps)`, at least 1.
    pub rate_limit_burst: Option<u32>,
    /// Form of `Retry-After` on a rate-limit 429.
    pub retry_after_format: RetryAfterFormat,
    /// When > 0, new registrations start `provisioning` for this long.
    pub provisioning_ms: u64,
    /// Status reached after `provisioning_ms`.
    pub provisioning_outcome: ProvisioningOutcome,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            error_rate: 0.0,
            error_status: 503,
            endpoints: BTreeMap::new(),
            rate_limit_rps: None,
            rate_limit_burst: None,
            retry_after_format: RetryAfterFormat::Seconds,
            provisioning_ms: 0,
            provisioning_outcome: ProvisioningOutcome::Active,
        }
    }
}

/// The random-fault settings that apply to one endpoint after overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Added delay in milliseconds.
    pub latency_ms: u64,
    /// Upper bound of the uniform extra delay.
    pub latency_jitter_ms: u64,
    /// Probability of a random error.
    pub error_rate: f64,
    /// Status of a random error.
    pub error_status: u16,
}

impl Effective {
    /// The delay to apply, drawing the jitter from `rng`.
    pub fn latency(&self, rng: &mut impl rand::Rng) -> Duration {
        let jitter = if self.latency_jitter_ms > 0 {
            rng.random_range(0..=self.latency_jitter_ms)
        } else {
            0
        };
        Duration::from_millis(self.latency_ms.saturating_add(jitter))
    }

    /// Whether this request draws a random error.
    pub fn draws_error(&self, rng: &mut impl rand::Rng) -> bool {
        self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate
    }
}

fn check_rate(rate: f64, what: &str) -> Result<(), String> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("{what} must be between 0.0 and 1.0"))
    }
}

fn check_error_status(status: u16, what: &str) -> Result<(), String> {
    if (400..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("{what} must be between 400 and 599"))
    }
}

fn check_endpoint(key: &str) -> Result<(), String> {
    if SERVED_ENDPOINTS.contains(&key) {
        Ok(())
    } else {
        Err(format!(
            "unknown endpoint {key:?}; expected one of: {}",
            SERVED_ENDPOINTS.join(", ")
        ))
    }
}

impl FaultConfig {
    /// Rejects values that cannot be applied, so that a bad PUT fails instead of misbehaving.
    pub fn check(&self) -> Result<(), String> {
        check_rate(self.error_rate, "error_rate")?;
        check_error_status(self.error_status, "error_status")?;
        for (key, ov) in &self.endpoints {
            check_endpoint(key)?;
            if let Some(rate) = ov.error_rate {
                check_rate(rate, &format!("endpoints[{key:?}].error_rate"))?;
            }
            if let Some(status) = ov.error_status {
                check_error_status(status, &format!("endpoints[{key:?}].error_status"))?;
            }
        }
        if let Some(rps) = self.rate_limit_rps
            && !(rps.is_finite() && rps >= 0.0)
        {
            return Err("rate_limit_rps must be a finite number >= 0".to_owned());
        }
        if self.rate_limit_burst == Some(0) {
            return Err("rate_limit_burst must be >= 1".to_owned());
        }
        Ok(())
    }

    /// The settings for `endpoint` with its override applied field by field.
    pub fn effective(&self, endpoint: &str) -> Effective {
        let ov = self.endpoints.get(endpoint);
        let pick = |f: fn(&EndpointFaults) -> Option<u64>, global: u64| -> u64 {
            ov.and_then(f).unwrap_or(global)
        };
        Effective {
            latency_ms: pick(|o| o.latency_ms, self.latency_ms),
            latency_jitter_ms: pick(|o| o.latency_jitter_ms, self.latency_jitter_ms),
            error_rate: ov.and_then(|o| o.error_rate).unwrap_or(self.error_rate),
            error_status: ov.and_then(|o| o.error_status).unwrap_or(self.error_status),
        }
    }

    /// A fresh limiter for this configuration; `None` when rate limiting is off.
    pub fn limiter(&self, now: Instant) -> Option<RateLimiter> {
        RateLimiter::new(self.rate_limit_rps?, self.rate_limit_burst, now)
    }
}

/// A token bucket shared by all counted requests of one workspace: one workspace, one budget
/// (each workspace has its own).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket; `None` when `rps` is 0 (unlimited).
    pub fn new(rps: f64, burst: Option<u32>, now: Instant) -> Option<Self> {
        if rps <= 0.0 || !rps.is_finite() {
            return None;
        }
        let burst = burst.map_or_else(|| rps.ceil().max(1.0), f64::from);
        Some(Self {
            rps,
            burst,
            tokens: burst,
            last: now,
        })
    }

    /// Takes one token, or says after how many whole seconds (at least 1) one will be there.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rps).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - self.tokens) / self.rps).ceil();
            // A float-to-int cast saturates; the value is positive and finite here.
            Err((wait as u64).max(1))
        }
    }
}

/// The `Retry-After` value for a wait of `secs`, in the configured form. The HTTP-date is rounded
/// up to a whole second so that it never asks for less than `secs`.
pub fn retry_after_value(format: RetryAfterFormat, secs: u64, now: SystemTime) -> String {
    match format {
        RetryAfterFormat::Seconds => secs.to_string(),
        RetryAfterFormat::HttpDate => {
            let at = now + Duration::from_secs(secs);
            let whole = match at.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) if d.subsec_nanos() > 0 => {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs() + 1)
                }
                _ => at,
            };
            httpdate::fmt_http_date(whole)
        }
    }
}

/// Kinds of one-shot fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer a given status and change nothing.
    Status,
    /// Perform the request, then close the connection without a response.
    CommitThenDrop,
    /// Close the connection without acting.
    Drop,
    /// Wait `delay_ms`, then proceed normally.
    Delay,
    /// Perform the request, then hold the answer for `delay_ms`: a window in which the write
    /// has happened but the client does not know it yet (e.g. to kill the client then).
    CommitThenDelay,
}

/// `Retry-After` as given in a fault: a string is sent verbatim, a number as its decimal form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetryAfterSpec {
    /// Sent verbatim.
    Text(String),
    /// Sent as its decimal form.
    Number(serde_json::Number),
}

impl RetryAfterSpec {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

fn one() -> u32 {
    1
}

/// One entry of `POST /_mock/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Endpoint key the fault applies to.
    pub endpoint: String,
    /// What happens.
    pub kind: FaultKind,
    /// How many of the next matching requests it hits (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// For `status`: the status to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For `status`: `Retry-After`, sent verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<RetryAfterSpec>,
    /// For `delay` and `commit_then_delay`: milliseconds to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// For `status`: the `detail` string (default: the status's reason phrase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl FaultSpec {
    /// Rejects faults that could never apply as asked.
    pub fn check(&self) -> Result<(), String> {
        check_endpoint(&self.endpoint)?;
        if self.count == 0 {
            return Err("count must be >= 1".to_owned());
        }
        match self.kind {
            FaultKind::Status => {
                let Some(status) = self.status else {
                    return Err("a status fault needs \"status\"".to_owned());
                };
                check_error_status(status, "status")?;
                if let Some(ra) = &self.retry_after
                    && http::HeaderValue::from_str(&ra.text()).is_err()
                {
                    return Err("retry_after is not a valid header value".to_owned());
                }
            }
            FaultKind::Delay | FaultKind::CommitThenDelay => {
                if self.delay_ms.is_none() {
                    return Err("a delay or commit_then_delay fault needs \"delay_ms\"".to_owned());
                }
            }
            FaultKind::CommitThenDrop | FaultKind::Drop => {}
        }
        Ok(())
    }
}

/// What a one-shot fault makes the current request do.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer `status` with `{"detail": detail}` and `Retry-After` if given.
    Status {
        /// Status to answer.
        status: u16,
        /// Verbatim `Retry-After`.
        retry_after: Option<String>,
        /// The `detail` string, if overridden.
        detail: Option<String>,
    },
    /// Act, then close the connection.
    CommitThenDrop,
    /// Close the connection without acting.
    Drop,
    /// Wait, then proceed.
    Delay(Duration),
    /// Act, wait, then answer.
    CommitThenDelay(Duration),
}

/// Pending one-shot faults in the order they were queued.
#[derive(Debug, Clone, Default)]
pub struct FaultQueue {
    pending: Vec<FaultSpec>,
}

impl FaultQueue {
    /// Queues a checked fault.
    pub fn push(&mut self, spec: FaultSpec) {
        self.pending.push(spec);
    }

    /// The faults still pending, `count` being what is left.
    pub fn pending(&self) -> &[FaultSpec] {
        &self.pending
    }

    /// Forgets every pending fault.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Consumes one hit of the oldest fault queued for `endpoint`.
    pub fn take(&mut self, endpoint: &str) -> Option<FaultAction> {
        let idx = self.pending.iter().position(|f| f.endpoint == endpoint)?;
        let spec = &mut self.pending[idx];
        let action = match spec.kind {
            FaultKind::Status => FaultAction::Status {
                status: spec.status.unwrap_or(503),
                retry_after: spec.retry_after.as_ref().map(RetryAfterSpec::text),
                detail: spec.detail.clone(),
            },
            FaultKind::CommitThenDrop => FaultAction::CommitThenDrop,
            FaultKind::Drop => FaultAction::Drop,
            FaultKind::Delay => {
                FaultAction::Delay(Duration::from_millis(spec.delay_ms.unwrap_or(0)))
            }
            FaultKind::CommitThenDelay => {
                FaultAction::CommitThenDelay(Duration::from_millis(spec.delay_ms.unwrap_or(0)))
            }
        };
        spec.count = spec.count.saturating_sub(1);
        if spec.count == 0 {
            self.pending.remove(idx);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_config_fields_reset_to_defaults() {
        let cfg: FaultConfig = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        assert_eq!(cfg.latency_ms, 5);
        assert_eq!(cfg.error_status, 503);
        assert_eq!(cfg.retry_after_format, RetryAfterFormat::Seconds);
        assert!(serde_json::from_str::<FaultConfig>(r#"{"latncy_ms": 5}"#).is_err());
    }

    #[test]
    fn config_check_rejects_bad_values() {
        let mut cfg = FaultConfig {
            error_rate: 1.5,
            ..FaultConfig::default()
        };
        assert!(cfg.check().is_err());
        cfg.error_rate = 1.0;
        assert!(cfg.check().is_ok());
        cfg.endpoints.insert(
            "POST /v1/phone-number".to_owned(),
            EndpointFaults::default(),
        );
        assert!(cfg.check().is_err());
        cfg.endpoints.clear();
        cfg.rate_limit_burst = Some(0);
        assert!(cfg.check().is_err());
    }

    #[test]
    fn endpoint_override_applies_field_by_field() {
        let mut cfg = FaultConfig {
            latency_ms: 10,
            error_rate: 0.5,
            ..FaultConfig::default()
        };
        cfg.endpoints.insert(
            CREATE.to_owned(),
            EndpointFaults {
                error_status: Some(502),
                error_rate: Some(1.0),
                ..EndpointFaults::default()
            },
        );
        let eff = cfg.effective(CREATE);
        assert_eq!(eff.latency_ms, 10);
        assert_eq!(eff.error_rate, 1.0);
        assert_eq!(eff.error_status, 502);
        let other = cfg.effective(LIST);
        assert_eq!(other.error_status, 503);
        assert_eq!(other.error_rate, 0.5);
    }

    #[test]
    fn error_rate_one_always_draws_and_zero_never() {
        let mut rng = rand::rng();
        let always = FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        }
        .effective(CREATE);
        let never = FaultConfig::default().effective(CREATE);
        for _ in 0..100 {
            assert!(always.draws_error(&mut rng));
            assert!(!never.draws_error(&mut rng));
        }
    }

    #[test]
    fn bucket_allows_burst_then_refills() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2.0, Some(3), t0).unwrap();
        assert!(rl.try_acquire(t0).is_ok());
        assert!(rl.try_acquire(t0).is_ok());
        assert!(rl.try_acquire(t0).is_ok());
        assert_eq!(rl.try_acquire(t0), Err(1));
        assert!(rl.try_acquire(t0 + Duration::from_millis(500)).is_ok());
        assert!(RateLimiter::new(0.0, None, t0).is_none());
    }

    #[test]
    fn slow_bucket_reports_whole_seconds() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0.1, None, t0).unwrap();
        assert!(rl.try_acquire(t0).is_ok());
        assert_eq!(rl.try_acquire(t0), Err(10));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_699_334_716_500);
        assert_eq!(retry_after_value(RetryAfterFormat::Seconds, 3, now), "3");
        let date = retry_after_value(RetryAfterFormat::HttpDate, 3, now);
        let parsed = httpdate::parse_http_date(&date).unwrap();
        assert!(parsed >= now + Duration::from_secs(3));
        assert!(date.ends_with(" GMT"));
    }

    #[test]
    fn queue_consumes_counts_in_order() {
        let mut q = FaultQueue::default();
        let spec: FaultSpec = serde_json::from_str(
            r#"{"endpoint": "POST /v1/phone-numbers", "kind": "status", "status": 503,
                "retry_after": 7, "count": 2}"#,
        )
        .unwrap();
        spec.check().unwrap();
        q.push(spec);
        q.push(FaultSpec {
            endpoint: CREATE.to_owned(),
            kind: FaultKind::Drop,
            count: 1,
            status: None,
            retry_after: None,
            delay_ms: None,
            detail: None,
        });
        assert_eq!(q.take(LIST), None);
        let first = q.take(CREATE);
        assert_eq!(
            first,
            Some(FaultAction::Status {
                status: 503,
                retry_after: Some("7".to_owned()),
                detail: None
            })
        );
        assert!(matches!(q.take(CREATE), Some(FaultAction::Status { .. })));
        assert_eq!(q.take(CREATE), Some(FaultAction::Drop));
        assert_eq!(q.take(CREATE), None);
    }

    #[test]
    fn fault_check_rejects_incomplete_specs() {
        let bad = [
            r#"{"endpoint": "POST /v1/phone-numbers", "kind": "status"}"#,
            r#"{"endpoint": "POST /v1/phone-numbers", "kind": "status", "status": 200}"#,
            r#"{"endpoint": "POST /v1/phone-numbers", "kind": "delay"}"#,
            r#"{"endpoint": "POST /v1/phone-numbers", "kind": "commit_then_delay"}"#,
            r#"{"endpoint": "POST /v1/phone-numbers", "kind": "drop", "count": 0}"#,
            r#"{"endpoint": "PUT /v1/phone-numbers", "kind": "drop"}"#,
        ];
        for b in bad {
            let spec: FaultSpec = serde_json::from_str(b).unwrap();
            assert!(spec.check().is_err(), "{b}");
        }
        assert!(
            serde_json::from_str::<FaultSpec>(r#"{"endpoint": "x", "kind": "explode"}"#).is_err()
        );
    }
}
