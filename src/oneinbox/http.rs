//! The real OneInbox client over HTTP (reqwest): bearer auth, explicit timeouts, one request
//! budget per account (token bucket + concurrency cap), `Retry-After` honoured for every caller
//! of that account, and no other.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::turn::Turns;
use super::{
    AccountEndpoint, ApiError, Budget, Deregistered, Endpoint, KeyCell, OneInboxApi, PatchRequest,
    RegisterRequest, Registration, SecretString,
};
use crate::metrics::Metrics;

/// Settings of the HTTP client.
#[derive(Clone, Debug)]
pub struct HttpClientConfig {
    /// e.g. `https://api.oneinbox.ai`.
    pub base_url: Url,
    pub api_key: SecretString,
    /// Where `api_key` came from, if a file (a mounted Secret): read again after the API
    /// rejects the key, so a rotated key works without a restart.
    pub api_key_file: Option<std::path::PathBuf>,
    /// Whole-request timeout, also enforced around each call.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Shared budget: requests per second and burst.
    pub rate_per_second: NonZeroU32,
    pub burst: NonZeroU32,
    /// At most this many requests in flight.
    pub max_in_flight: usize,
    /// Longest `Retry-After` honoured (longer values are clamped).
    pub max_retry_after: Duration,
    /// CA certificates trusted in addition to the built-in roots (`--api-ca-file`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

/// The CA certificates of a PEM file (`--api-ca-file`); a file without one is an error, so a
/// wrong mount fails at start-up instead of at the first call.
pub fn load_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the API CA file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("the API CA file {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the API CA file {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Page size for list look-ups (the API's largest).
pub const PAGE_LIMIT: u32 = 100;

/// The reqwest-backed `OneInboxApi`: one account's budget (the operator-wide one, or an
/// account's, made by `for_account`).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
    /// Calls of this handle are background work (drift checks).
    background: bool,
}

struct Inner {
    http: reqwest::Client,
    cfg: HttpClientConfig,
    /// The account's API URL (the operator's --api-url unless the account names another).
    base_url: Url,
    limiter: DefaultDirectRateLimiter,
    /// Background calls also take a token here first: at most four fifths of the budget's
    /// rate and burst, so the rest of the bucket is always there for user work.
    background_limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
    /// One call at a time takes its place, its cooldown and its token; user calls first.
    turns: Turns,
    /// When a call last had to wait for its place, cooldown or token (the budget was used up).
    waited_at: std::sync::Mutex<Option<Instant>>,
    /// No call starts before this instant (set from `Retry-After`).
    cooldown: Mutex<Cooldown>,
    /// The key, replaced when its file (operator-wide) or Secret (an account's) changes.
    key: KeyCell,
    /// Only the operator-wide client reads a key file again after a rejection.
    key_file: Option<std::path::PathBuf>,
    /// The account, as metrics label it.
    account: Arc<str>,
    metrics: Metrics,
}

/// How long after a call last waited for the budget it counts as used up (the gate of the
/// account's passes does not grow then: more passes would only wait too).
const BUDGET_USED_UP_FOR: Duration = Duration::from_secs(1);

/// The metrics label of the operator-wide key's budget.
pub const OPERATOR_ACCOUNT: &str = "operator";

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn new(
        http: reqwest::Client,
        base_url: Url,
        budget: &Budget,
        key: KeyCell,
        key_file: Option<std::path::PathBuf>,
        account: Arc<str>,
        cfg: HttpClientConfig,
        metrics: Metrics,
    ) -> Inner {
        let four_fifths =
            |v: NonZeroU32| NonZeroU32::new(v.get() * 4 / 5).unwrap_or(NonZeroU32::MIN);
        Inner {
            http,
            base_url,
            limiter: RateLimiter::direct(
                Quota::per_second(budget.rate_per_second).allow_burst(budget.burst),
            ),
            background_limiter: RateLimiter::direct(
                Quota::per_second(four_fifths(budget.rate_per_second))
                    .allow_burst(four_fifths(budget.burst)),
            ),
            in_flight: Semaphore::new(budget.max_in_flight.max(1)),
            turns: Turns::default(),
            waited_at: std::sync::Mutex::default(),
            cooldown: Mutex::new(Cooldown::default()),
            key,
            key_file,
            account,
            cfg,
            metrics,
        }
    }

    /// Wait out a 429's cooldown; the first call after it starts with an empty bucket.
    async fn wait_cooldown(&self) {
        loop {
            let mut cd = self.cooldown.lock().await;
            match cd.until {
                Some(t) if t > Instant::now() => {
                    drop(cd);
                    tokio::time::sleep_until(t).await;
                }
                Some(_) if !cd.drained => {
                    // The first call after the wait: the bucket starts empty.
                    drain(&self.limiter);
                    cd.drained = true;
                    break;
                }
                _ => break,
            }
        }
    }

    /// A 429: every caller of this budget waits `wait` (or longer, if one already does).
    async fn cool_down(&self, wait: Duration) {
        let mut cd = self.cooldown.lock().await;
        let t = Instant::now() + wait;
        if cd.until.is_none_or(|c| c < t) {
            *cd = Cooldown {
                until: Some(t),
                drained: false,
            };
        }
    }
}

/// The `Retry-After` wait every caller honours.
#[derive(Default)]
struct Cooldown {
    until: Option<Instant>,
    /// The bucket was emptied once the wait ended.
    drained: bool,
}

/// Take every token the bucket holds. After a `Retry-After` wait the calls that waited then go
/// out at the budget's pace, the bucket refilling from empty, instead of as one burst of all of
/// them (which a server that just said 429 answers with more 429s).
fn drain<C, MW>(limiter: &RateLimiter<NotKeyed, InMemoryState, C, MW>)
where
    C: governor::clock::Clock,
    MW: governor::middleware::RateLimitingMiddleware<C::Instant>,
{
    while limiter.check().is_ok() {}
}

/// `GET /v1/phone-numbers` page; a bare array is also accepted (contract: List).
#[derive(Deserialize)]
#[serde(untagged)]
enum ListBody {
    Page {
        items: Vec<Registration>,
        total: u64,
    },
    Bare(Vec<Registration>),
}

/// Idle connections kept to the API between bursts: enough for steady drift checks.
const IDLE_CONNECTIONS: usize = 8;

impl HttpClient {
    /// Build the one reqwest client of the process.
    pub fn new(cfg: HttpClientConfig, metrics: Metrics) -> Result<HttpClient, reqwest::Error> {
        #[allow(clippy::disallowed_methods)] // the one place the HTTP client is built
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(concat!("oneinbox-operator/", env!("CARGO_PKG_VERSION")))
            // A burst opens up to --api-max-in-flight connections (~70 KiB of buffers each);
            // keep only a few once it is over.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .tls_certs_merge(cfg.extra_roots.iter().cloned())
            .build()?;
        let budget = Budget {
            rate_per_second: cfg.rate_per_second,
            burst: cfg.burst,
            max_in_flight: cfg.max_in_flight,
        };
        Ok(HttpClient {
            background: false,
            inner: Arc::new(Inner::new(
                http,
                cfg.base_url.clone(),
                &budget,
                KeyCell::new(cfg.api_key.clone()),
                cfg.api_key_file.clone(),
                OPERATOR_ACCOUNT.into(),
                cfg,
                metrics,
            )),
        })
    }

    /// A client with its own budget, key and (for a CA bundle) connection pool: an account's.
    fn account_client(&self, account: &AccountEndpoint) -> Result<HttpClient, String> {
        let cfg = &self.inner.cfg;
        let http = if account.extra_roots.is_empty() {
            self.inner.http.clone()
        } else {
            #[allow(clippy::disallowed_methods)] // an account's own CA bundle needs its own pool
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.connect_timeout)
                .user_agent(concat!("oneinbox-operator/", env!("CARGO_PKG_VERSION")))
                .pool_max_idle_per_host(IDLE_CONNECTIONS)
                .tls_certs_merge(cfg.extra_roots.iter().chain(&account.extra_roots).cloned())
                .build()
                .map_err(|e| format!("cannot build an HTTP client with the CA bundle: {e}"))?
        };
        let base_url = match &account.base_url {
            Some(u) => Url::parse(u).map_err(|e| format!("apiUrl {u:?} is not a URL: {e}"))?,
            None => cfg.base_url.clone(),
        };
        Ok(HttpClient {
            background: false,
            inner: Arc::new(Inner::new(
                http,
                base_url,
                &account.budget,
                account.key.clone(),
                None,
                account.label.as_str().into(),
                cfg.clone(),
                self.inner.metrics.clone(),
            )),
        })
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.inner
            .base_url
            .join(path)
            .map_err(|e| ApiError::Rejected {
                status: 0,
                code: None,
                detail: format!("bad OneInbox URL: {e}"),
            })
    }

    /// Wait for the budget, send, and classify. `op` is the metric label of the endpoint.
    async fn call(
        &self,
        op: &'static str,
        endpoint: Endpoint,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, String), ApiError> {
        let inner = &self.inner;
        let _permit = self.wait_turn().await?;
        let key = inner.key.get();
        let started = Instant::now();
        let outcome = match self.send(method, url, body, &key).await {
            Err(e) => Err(e),
            Ok((status, _, text)) if status.is_success() => Ok((status, text)),
            Ok((status, retry_after, text)) => {
                let retry_after = retry_after.map(|d| d.min(inner.cfg.max_retry_after));
                if status == StatusCode::TOO_MANY_REQUESTS {
                    // Every caller waits, not only this object.
                    inner
                        .cool_down(retry_after.unwrap_or(Duration::from_secs(1)))
                        .await;
                }
                Err(ApiError::from_answer(
                    endpoint,
                    status.as_u16(),
                    retry_after,
                    &text,
                    &key,
                ))
            }
        };
        inner.metrics.observe_api_request(
            &inner.account,
            op,
            outcome_label(&outcome),
            started.elapsed(),
        );
        if matches!(outcome, Err(ApiError::KeyRejected { .. })) {
            self.reload_operator_key();
        }
        outcome
    }

    /// Wait for this call's turn within the budget; the place it holds while in flight.
    async fn wait_turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        let inner = &self.inner;
        let waited = Instant::now();
        // Background work waits for its own share of the budget before it takes any place.
        if self.background {
            inner.background_limiter.until_ready().await;
        }
        // In turn (user calls ahead of drift checks): the in-flight place first, then the
        // cooldown, then the token; a call that waited for its place while another one drew a
        // 429 honours that 429's wait too. Only the call whose turn it is waits holding a place.
        let turn = inner.turns.take(self.background).await;
        let turned = Instant::now();
        let permit = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable {
                what: "shutdown".into(),
                detail: "client closed".into(),
                retry_after: None,
            })?;
        inner.wait_cooldown().await;
        inner.limiter.until_ready().await;
        if turned.elapsed() >= Duration::from_millis(1) {
            *crate::mutex::lock(&inner.waited_at) = Some(Instant::now());
        }
        drop(turn);
        inner
            .metrics
            .observe_rate_limit_wait(&inner.account, waited.elapsed());
        Ok(permit)
    }

    /// Send one request and read its answer: status, Retry-After, body. No answer in time, or
    /// no connection, is an `Unavailable` error.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        key: &SecretString,
    ) -> Result<(StatusCode, Option<Duration>, String), ApiError> {
        let inner = &self.inner;
        let mut req = inner
            .http
            .request(method, url)
            .bearer_auth(key.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        // reqwest's own timeout covers the request; this one also bounds reading the body.
        let result = tokio::time::timeout(inner.cfg.timeout + Duration::from_secs(1), async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((status, retry_after, text))
        })
        .await;
        match result {
            Err(_) => Err(unavailable(
                "timeout",
                "no answer within the timeout".into(),
            )),
            Ok(Err(e)) if e.is_timeout() => {
                Err(unavailable("timeout", e.without_url().to_string()))
            }
            Ok(Err(e)) => Err(unavailable("connection", e.without_url().to_string())),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Read the operator-wide key file again (after a rejection): the next call uses what it
    /// holds now. An unreadable or empty file keeps the key we have.
    fn reload_operator_key(&self) {
        let Some(path) = &self.inner.key_file else {
            return;
        };
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                self.inner
                    .key
                    .set(SecretString::new(text.trim().to_owned()));
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "the API key file is empty; keeping the key in use")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the API key file again; keeping the key in use")
            }
        }
    }

    /// Every registration of the workspace (`oneinbox-operator import`), `page_size` (1–100)
    /// at a time.
    pub async fn list_all(&self, page_size: u32) -> Result<Vec<Registration>, ApiError> {
        self.list_pages(None, page_size.clamp(1, PAGE_LIMIT)).await
    }

    /// `GET /v1/phone-numbers`, optionally filtered by number, paged until
    /// `offset + len(items) >= total` (contract: List); a bare array is the complete result.
    async fn list_pages(
        &self,
        number: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Registration>, ApiError> {
        let mut found = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let mut url = self.url("/v1/phone-numbers")?;
            {
                // query_pairs_mut percent-encodes '+' as %2B.
                let mut query = url.query_pairs_mut();
                if let Some(number) = number {
                    query.append_pair("phone_number", number);
                }
                query
                    .append_pair("limit", &limit.to_string())
                    .append_pair("offset", &offset.to_string());
            }
            let (_, text) = self
                .call("list", Endpoint::Collection, Method::GET, url, None)
                .await?;
            match Self::decode::<ListBody>(&text)? {
                ListBody::Bare(items) => {
                    found.extend(items);
                    break;
                }
                ListBody::Page { items, total } => {
                    let n = items.len() as u64;
                    found.extend(items);
                    offset += n;
                    if n == 0 || offset >= total {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApiError> {
        serde_json::from_str(text)
            .map_err(|e| unavailable("decode", format!("unexpected response body: {e}")))
    }
}

fn unavailable(what: &str, detail: String) -> ApiError {
    ApiError::Unavailable {
        what: what.into(),
        detail,
        retry_after: None,
    }
}

fn outcome_label(r: &Result<(StatusCode, String), ApiError>) -> &'static str {
    match r {
        Ok(_) => "success",
        Err(ApiError::Unavailable { what, .. }) if what == "HTTP 429" => "throttled",
        Err(ApiError::Unavailable { what, .. }) if what.starts_with("HTTP") => "server_error",
        Err(ApiError::Unavailable { .. }) => "transport_error",
        Err(ApiError::NotFound) => "not_found",
        Err(ApiError::KeyRejected { .. }) => "unauthorized",
        Err(ApiError::AlreadyRegistered { .. }) => "conflict",
        Err(ApiError::Rejected { .. }) => "rejected",
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (contract: Retries).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `/v1/phone-numbers/{id}`, with the id percent-encoded as a path segment.
fn item_path(id: &str) -> String {
    let mut url = match Url::parse("http://x/v1/phone-numbers/") {
        Ok(u) => u,
        Err(_) => return format!("/v1/phone-numbers/{id}"),
    };
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().push(id);
    }
    url.path().to_owned()
}

impl OneInboxApi for HttpClient {
    fn for_account(&self, account: &AccountEndpoint) -> Result<Self, String> {
        self.account_client(account)
    }

    fn budget_used_up(&self) -> bool {
        self.inner.turns.taken()
            || crate::mutex::lock(&self.inner.waited_at)
                .is_some_and(|t| t.elapsed() < BUDGET_USED_UP_FOR)
    }

    fn in_background(&self) -> Self {
        HttpClient {
            inner: self.inner.clone(),
            background: true,
        }
    }

    async fn verify(&self) -> Result<(), ApiError> {
        let mut url = self.url("/v1/phone-numbers")?;
        url.query_pairs_mut().append_pair("limit", "1");
        self.call("verify", Endpoint::Collection, Method::GET, url, None)
            .await
            .map(|_| ())
    }

    async fn register(&self, req: &RegisterRequest) -> Result<Registration, ApiError> {
        let body = serde_json::to_value(req)
            .map_err(|e| unavailable("encode", format!("cannot encode request: {e}")))?;
        let (_, text) = self
            .call(
                "register",
                Endpoint::Collection,
                Method::POST,
                self.url("/v1/phone-numbers")?,
                Some(body),
            )
            .await?;
        Self::decode(&text)
    }

    async fn get(&self, id: &str) -> Result<Registration, ApiError> {
        let (_, text) = self
            .call(
                "get",
                Endpoint::Item,
                Method::GET,
                self.url(&item_path(id))?,
                None,
            )
            .await?;
        Self::decode(&text)
    }

    async fn find_by_number(&self, number: &str) -> Result<Vec<Registration>, ApiError> {
        let mut found = self.list_pages(Some(number), PAGE_LIMIT).await?;
        // The filter is exact on the server; re-check so a lenient server cannot mislead us.
        found.retain(|r| r.phone_number == number);
        Ok(found)
    }

    async fn patch(&self, id: &str, req: &PatchRequest) -> Result<Registration, ApiError> {
        let body = serde_json::to_value(req)
            .map_err(|e| unavailable("encode", format!("cannot encode request: {e}")))?;
        let (_, text) = self
            .call(
                "patch",
                Endpoint::Item,
                Method::PATCH,
                self.url(&item_path(id))?,
                Some(body),
            )
            .await?;
        Self::decode(&text)
    }

    async fn deregister(&self, id: &str) -> Result<Deregistered, ApiError> {
        match self
            .call(
                "delete",
                Endpoint::Item,
                Method::DELETE,
                self.url(&item_path(id))?,
                None,
            )
            .await
        {
            Ok(_) => Ok(Deregistered::Released),
            Err(ApiError::NotFound) => Ok(Deregistered::AlreadyGone),
            Err(e) => Err(e),
        }
    }
}

/// Refuse an `--api-url` the key must not be sent to: anything but https, unless plain http
/// is allowed explicitly.
pub fn check_api_url(url: &reqwest::Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http => Ok(()),
        "http" => Err(format!(
            "--api-url {} is plain http: the API key would cross the network \
             unencrypted; use https, or pass --allow-insecure-http (local mock \
             servers and tests only)",
            without_userinfo(url)
        )),
        other => Err(format!(
            "--api-url {}: unsupported scheme {other:?} (use https)",
            without_userinfo(url)
        )),
    }
}

/// The URL for a message: never a user name or password that it may carry.
fn without_userinfo(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `openssl`: a CA, and a server certificate for 127.0.0.1 that it signs.
    fn make_ca_and_server_cert(dir: &Path) {
        let sh = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out server.pem
"#;
        let out = Command::new("sh")
            .args(["-c", sh])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A TLS server on loopback that answers every request with 404 "not found".
    async fn tls_server(dir: &Path) -> Url {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("https://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = r#"{"detail":"Phone number not found"}"#;
                    let resp = format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        url
    }

    fn client(base_url: Url, extra_roots: Vec<reqwest::Certificate>) -> HttpClient {
        client_with_budget(base_url, extra_roots, 100, 100)
    }

    fn client_with_budget(
        base_url: Url,
        extra_roots: Vec<reqwest::Certificate>,
        rate_per_second: u32,
        burst: u32,
    ) -> HttpClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        HttpClient::new(
            HttpClientConfig {
                base_url,
                api_key: SecretString::new("oi_sk_test".into()),
                api_key_file: None,
                timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                rate_per_second: NonZeroU32::new(rate_per_second).unwrap(),
                burst: NonZeroU32::new(burst).unwrap(),
                max_in_flight: 4,
                max_retry_after: Duration::from_secs(1),
                extra_roots,
            },
            Metrics::new(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_budget_counts_as_used_up_for_a_second_after_a_call_waited_for_it() {
        // Nothing listens on port 1: each call fails at once, after taking its token.
        let c = client_with_budget(Url::parse("http://127.0.0.1:1").unwrap(), Vec::new(), 10, 1);
        assert!(!c.budget_used_up());
        let _ = c.get("pn-1").await;
        assert!(!c.budget_used_up(), "the first call found its token");
        // The bucket (one token) is empty: the next call waits about 100 ms for it.
        let _ = c.get("pn-1").await;
        assert!(c.budget_used_up());
        tokio::time::sleep(BUDGET_USED_UP_FOR).await;
        assert!(
            !c.budget_used_up(),
            "a second later it counts as free again"
        );
    }

    #[test]
    fn after_a_retry_after_wait_the_bucket_refills_from_empty() {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(5).unwrap())
            .allow_burst(NonZeroU32::new(10).unwrap());
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        // A full bucket would let 10 calls out at once.
        drain(&limiter);
        assert!(limiter.check().is_err(), "nothing left at once");
        // Then one call per 200 ms, the budget's pace.
        for _ in 0..10 {
            clock.advance(Duration::from_millis(200));
            assert!(limiter.check().is_ok());
            assert!(limiter.check().is_err());
        }
    }

    #[tokio::test]
    async fn api_ca_file_is_trusted_in_addition_to_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        make_ca_and_server_cert(dir.path());
        let url = tls_server(dir.path()).await;

        // Without the CA: the handshake fails, a retryable connection error.
        let err = client(url.clone(), Vec::new())
            .get("pn-1")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Unavailable { what, .. } if what == "connection"),
            "{err:?}"
        );

        // With --api-ca-file: the same server is trusted, and its answer arrives.
        let roots = load_ca_file(&dir.path().join("ca.pem")).unwrap();
        assert_eq!(roots.len(), 1);
        let err = client(url, roots).get("pn-1").await.unwrap_err();
        assert!(matches!(err, ApiError::NotFound), "{err:?}");
    }

    #[test]
    fn api_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = load_ca_file(&empty).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let err = load_ca_file(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.contains("cannot read the API CA file"), "{err}");
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn item_path_encodes_the_id() {
        assert_eq!(item_path("abc"), "/v1/phone-numbers/abc");
        assert_eq!(item_path("a/b"), "/v1/phone-numbers/a%2Fb");
    }

    #[test]
    fn list_accepts_page_and_bare_array() {
        let page: ListBody =
            serde_json::from_str(r#"{"items":[],"total":0,"limit":20,"offset":0}"#).unwrap();
        assert!(matches!(page, ListBody::Page { total: 0, .. }));
        let bare: ListBody = serde_json::from_str("[]").unwrap();
        assert!(matches!(bare, ListBody::Bare(_)));
    }

    #[test]
    fn filter_encodes_plus() {
        let mut url = Url::parse("http://x/v1/phone-numbers").unwrap();
        url.query_pairs_mut()
            .append_pair("phone_number", "+15551234567");
        assert_eq!(url.query(), Some("phone_number=%2B15551234567"));
    }
}
