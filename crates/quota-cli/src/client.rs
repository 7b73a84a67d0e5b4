//! Talking to the cluster: one lazily connected channel per endpoint, the admin token on
//! every call, and retries.
//!
//! A call that fails with UNAVAILABLE (no leader, a node shutting down, a refused or broken
//! connection) or DEADLINE_EXCEEDED is retried against the next endpoint, round robin,
//! with a short backoff after each full round, until [`Client::retry_for`] has passed.
//! Writes carry a request id (16 random bytes) that the caller creates once, before the
//! first attempt, and every retry resends the same one: the cluster applies the write once
//! and answers a retry with the first answer.

use crate::error::{CliError, Unreachable};
use quota_proto::v1::admin_client::AdminClient;
use quota_proto::v1::cluster_client::ClusterClient;
use quota_proto::v1::data_client::DataClient;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The default endpoint: where `quotad --dev` listens.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";
/// How long to keep retrying an unavailable cluster by default, in seconds.
pub const DEFAULT_RETRY_FOR_SECS: f64 = 10.0;
/// How long to wait for a TCP connection to one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one attempt may take; the server gives up on a write after 10 s by default.
const CALL_TIMEOUT: Duration = Duration::from_secs(12);
/// Backoff after a full round of failed endpoints: starts here, doubles, capped below.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Length of a request id, in bytes (see proto/quota/v1/common.proto).
pub const REQUEST_ID_LEN: usize = 16;
/// Most endpoints accepted on the command line.
pub const MAX_ENDPOINTS: usize = 32;

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Auth {
    // The token is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Auth {
    /// `token`: the admin token, if any (surrounding white space is ignored).
    pub fn new(token: Option<&str>) -> Result<Auth, CliError> {
        let header = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {t}").parse().map_err(|_| {
                        CliError::usage(
                            "the admin token contains characters that cannot be sent in a \
                             header; use printable ASCII",
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Auth { header })
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Auth>;

/// One endpoint's clients, handed to the closure of [`Client::call`].
#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    auth: Auth,
}

impl Conn {
    pub fn admin(&self) -> AdminClient<Authed> {
        AdminClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn cluster(&self) -> ClusterClient<Authed> {
        ClusterClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn data(&self) -> DataClient<Authed> {
        DataClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// The cluster, as a list of endpoints.
pub struct Client {
    endpoints: Vec<(String, Conn)>,
    retry_for: Duration,
}

impl Client {
    /// Parse `endpoints` (URLs such as `http://127.0.0.1:7070`; a bare `host:port` gets
    /// `http://`) and prepare one lazily connected channel for each.
    pub fn new(endpoints: &[String], auth: Auth, retry_for: Duration) -> Result<Client, CliError> {
        if endpoints.is_empty() {
            return Err(CliError::usage(
                "no endpoint given: pass --endpoints http://HOST:PORT (or set QUOTA_ENDPOINTS)",
            ));
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(CliError::usage(format!(
                "{} endpoints given; at most {MAX_ENDPOINTS}",
                endpoints.len()
            )));
        }
        let mut out = Vec::with_capacity(endpoints.len());
        for raw in endpoints {
            let url = normalise_endpoint(raw)?;
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| CliError::usage(format!("endpoint `{raw}` is not a valid URL: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            let channel = endpoint.connect_lazy();
            out.push((
                url,
                Conn {
                    channel,
                    auth: auth.clone(),
                },
            ));
        }
        Ok(Client {
            endpoints: out,
            retry_for,
        })
    }

    /// Run `call` against the endpoints until one answers with something other than
    /// UNAVAILABLE or DEADLINE_EXCEEDED, or until the retry deadline. Any other error is a
    /// refusal and is returned at once.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, CliError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut last_errors: Vec<Option<String>> = vec![None; self.endpoints.len()];
        let mut backoff = FIRST_BACKOFF;
        loop {
            for (i, (_, conn)) in self.endpoints.iter().enumerate() {
                match call(conn.clone()).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) if retryable(&status) => {
                        last_errors[i] = Some(describe(&status));
                    }
                    Err(status) => return Err(CliError::from(status)),
                }
            }
            let waited = started.elapsed();
            if waited + backoff > self.retry_for {
                return Err(CliError::Unreachable(Unreachable {
                    attempts: self
                        .endpoints
                        .iter()
                        .zip(last_errors)
                        .map(|((url, _), e)| (url.clone(), e.unwrap_or_default()))
                        .collect(),
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                }));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A fresh request id: 16 random bytes from the operating system.
pub fn new_request_id() -> Result<Vec<u8>, CliError> {
    let mut id = vec![0u8; REQUEST_ID_LEN];
    getrandom::fill(&mut id).map_err(|e| CliError::Io {
        what: "cannot get random bytes for a request id".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(id)
}

/// Parse a request id given on the command line: 32 hexadecimal digits.
pub fn parse_request_id(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() != REQUEST_ID_LEN * 2 {
        return Err(format!(
            "a request id is {} hexadecimal digits; `{hex}` has {}",
            REQUEST_ID_LEN * 2,
            hex.len()
        ));
    }
    (0..REQUEST_ID_LEN)
        .map(|i| {
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("`{hex}` is not hexadecimal"))
        })
        .collect()
}

fn normalise_endpoint(raw: &str) -> Result<String, CliError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(CliError::usage(
            "an empty endpoint was given; pass --endpoints http://HOST:PORT[,http://HOST:PORT...]",
        ));
    }
    if raw.starts_with("https://") {
        return Err(CliError::usage(format!(
            "endpoint `{raw}`: quotad serves plaintext gRPC; use http:// (put TLS in a proxy)"
        )));
    }
    if raw.starts_with("http://") {
        Ok(raw.to_owned())
    } else {
        Ok(format!("http://{raw}"))
    }
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
    )
}

/// The status message, with the transport error behind it when there is one (the
/// message alone says "tcp connect error"; the source says "Connection refused").
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: request ids are 16 bytes, random, and round-trip through their hex form.
    // Set-up: two fresh ids; a hex id; bad hex. Pass: lengths, inequality, parse results.
    #[test]
    fn request_ids() {
        let a = new_request_id().unwrap();
        let b = new_request_id().unwrap();
        assert_eq!(a.len(), REQUEST_ID_LEN);
        assert_ne!(a, b);
        let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_request_id(&hex).unwrap(), a);
        assert!(parse_request_id("abc").is_err());
        assert!(parse_request_id(&"zz".repeat(16)).is_err());
    }

    // Property: endpoints get a scheme when they lack one, https is refused with a hint,
    // and the token never shows in Debug.
    // Set-up: a bare host:port, an http URL, an https URL, a token.
    // Pass: the normalised strings, an error, and a redacted Debug.
    #[test]
    fn endpoints_and_token() {
        assert_eq!(normalise_endpoint("h:1").unwrap(), "http://h:1");
        assert_eq!(normalise_endpoint("http://h:1").unwrap(), "http://h:1");
        assert!(normalise_endpoint("https://h:1").is_err());
        let auth = Auth::new(Some("very-secret-token")).unwrap();
        assert!(!format!("{auth:?}").contains("very-secret"));
    }
}
