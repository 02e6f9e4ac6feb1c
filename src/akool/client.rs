//! HTTP client for the Akool API: authentication, one shared connection pool, and one place
//! where each call is sent, timed, logged and classified.
//!
//! Logging: every call at debug (`-v`); the bodies of requests and answers at trace (`-vv`),
//! with the credentials scrubbed from them and the getToken answer left out (it is the token).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::json;
use tokio::sync::OnceCell;

use super::wire::{self, Exchange, Success};
use super::{Analysis, ApiError, CreateTask, Task};
use crate::secret::Secret;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `x-api-key` header.
    ApiKey(Secret),
    /// getToken once, then `Authorization: Bearer`.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
}

/// Checked client configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub credentials: Credentials,
    /// Limit for one whole API call (connect, send, read the answer). Downloads over
    /// [`Client::http`] are not bound by it and set their own.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

/// The API client. Cheap to clone; clones share one connection pool and one token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The API root without a trailing slash.
    base_url: String,
    credentials: Credentials,
    request_timeout: Duration,
    /// The bearer token of the client-credentials flow, fetched by the first call that needs
    /// it; concurrent first calls wait for that one fetch instead of starting their own.
    token: OnceCell<Secret>,
}

const ANALYZE_PATH: &str = "/api/open/v4/headswap/analyze";
const ANALYSIS_DETAIL_PATH: &str = "/api/open/v4/headswap/analyze/detail";
const CREATE_TASK_PATH: &str = "/api/open/v4/headswap/task/create";
const TASK_DETAIL_PATH: &str = "/api/open/v4/headswap/task/detail";
const GET_TOKEN_PATH: &str = "/api/open/v3/getToken";

impl Client {
    /// Build a client. Fails (as `Rejected { code: 0 }`) on an unusable base URL or empty
    /// credentials; nothing is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Client, ApiError> {
        let base_url = checked_base_url(&config.base_url)?;
        let empty = match &config.credentials {
            Credentials::ApiKey(key) => key.expose().trim().is_empty(),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => client_id.trim().is_empty() || client_secret.expose().trim().is_empty(),
        };
        if empty {
            return Err(configuration_error("the API credentials are empty"));
        }
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("headswap-batch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .redirect(redirect_policy(&base_url))
            .build()
            .map_err(|error| {
                configuration_error(format!("could not set up the HTTP client: {error}"))
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                credentials: config.credentials,
                request_timeout: config.request_timeout,
                token: OnceCell::new(),
            }),
        })
    }

    /// The shared connection pool, for downloading outputs.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The API root this client talks to, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Submit a video for person analysis.
    pub async fn analyze(&self, video_url: &str) -> Result<Analysis, ApiError> {
        let body = json!({ "video_url": video_url, "type": "head" });
        let success = self
            .call(Method::POST, ANALYZE_PATH, None, Some(body))
            .await?;
        wire::decode_analysis(success.data)
    }

    /// Read an analysis by its `_id`.
    pub async fn analysis_detail(&self, id: &str) -> Result<Analysis, ApiError> {
        let success = self
            .call(Method::GET, ANALYSIS_DETAIL_PATH, Some(id), None)
            .await?;
        wire::decode_analysis(success.data)
    }

    /// Create a render task. Spends credits: a create that is sent twice renders twice.
    pub async fn create_task(&self, request: &CreateTask) -> Result<Task, ApiError> {
        let mut body = json!({
            "video_url": request.video_url,
            "mappings": request.mappings,
            "model_name": request.model_name,
            "resolution": request.resolution.as_str(),
            "keep_original_sound": request.keep_original_sound,
        });
        if let Some(template_id) = &request.template_id {
            body["template_id"] = json!(template_id);
        }
        let success = self
            .call(Method::POST, CREATE_TASK_PATH, None, Some(body))
            .await?;
        wire::decode_task(success.data)
    }

    /// Read a render task by the `_id` its create returned.
    pub async fn task_detail(&self, id: &str) -> Result<Task, ApiError> {
        let success = self
            .call(Method::GET, TASK_DETAIL_PATH, Some(id), None)
            .await?;
        wire::decode_task(success.data)
    }

    /// One authenticated API call.
    async fn call(
        &self,
        method: Method,
        path: &'static str,
        id: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<Success, ApiError> {
        let auth_header = self.auth_header().await?;
        let mut request = self.request(method.clone(), path).header(
            if matches!(self.inner.credentials, Credentials::ApiKey(_)) {
                "x-api-key"
            } else {
                "authorization"
            },
            auth_header,
        );
        if let Some(id) = id {
            request = request.query(&[("_id", id)]);
        }
        if let Some(body) = body {
            tracing::trace!(%method, path, body = %self.scrub_text(body.to_string()), "api request body");
            request = request.json(&body);
        }
        self.exchange(&method, path, id, request).await
    }

    /// The value of the authentication header: the API key, or `Bearer <token>` after
    /// fetching the token once.
    async fn auth_header(&self) -> Result<HeaderValue, ApiError> {
        let value = match &self.inner.credentials {
            Credentials::ApiKey(key) => key.expose().to_owned(),
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => {
                let token = self
                    .inner
                    .token
                    .get_or_try_init(|| self.fetch_token(client_id, client_secret))
                    .await?;
                format!("Bearer {}", token.expose())
            }
        };
        let mut header = HeaderValue::from_str(&value).map_err(|_| {
            configuration_error("the credentials contain characters not allowed in a header")
        })?;
        // Keeps the value out of reqwest's and hyper's Debug output.
        header.set_sensitive(true);
        Ok(header)
    }

    /// POST getToken; the token sits at the top level of the answer, not under `data`.
    async fn fetch_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<Secret, ApiError> {
        let body = json!({ "clientId": client_id, "clientSecret": client_secret.expose() });
        tracing::trace!(
            path = GET_TOKEN_PATH,
            body = %json!({ "clientId": client_id, "clientSecret": "[redacted]" }),
            "api request body"
        );
        let request = self.request(Method::POST, GET_TOKEN_PATH).json(&body);
        let success = self
            .exchange(&Method::POST, GET_TOKEN_PATH, None, request)
            .await?;
        match success.token {
            Some(token) if !token.trim().is_empty() => Ok(Secret::new(token)),
            _ => Err(ApiError::Transient {
                detail: "the getToken answer has no token".to_owned(),
                outcome_unknown: false,
            }),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.inner
            .http
            .request(method, format!("{}{path}", self.inner.base_url))
            .timeout(self.inner.request_timeout)
    }

    /// Send, read the whole answer, classify it, log it.
    async fn exchange(
        &self,
        method: &Method,
        path: &'static str,
        id: Option<&str>,
        request: RequestBuilder,
    ) -> Result<Success, ApiError> {
        let started = Instant::now();
        let exchange = match request.send().await {
            Err(error) => Exchange::Failed(error),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(wire::parse_retry_after);
                let body = response.bytes().await.map(|body| body.to_vec());
                if let Ok(bytes) = &body {
                    if tracing::enabled!(tracing::Level::TRACE) {
                        let shown = self.shown_body(path, bytes);
                        tracing::trace!(%method, path, id = id.unwrap_or(""), status, body = %shown, "api answer body");
                    }
                }
                Exchange::Answered {
                    status,
                    retry_after,
                    body,
                }
            }
        };
        let http_status = match &exchange {
            Exchange::Answered { status, .. } => Some(*status),
            Exchange::Failed(_) => None,
        };
        let outcome = wire::classify(exchange).map_err(|error| self.scrub(error));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let id = id.unwrap_or("");
        match &outcome {
            Ok(_) => {
                tracing::debug!(%method, path, id, http_status, code = wire::CODE_OK, elapsed_ms, "api call")
            }
            Err(error) => {
                tracing::debug!(%method, path, id, http_status, code = error.code(), elapsed_ms, %error, "api call failed")
            }
        }
        outcome
    }

    /// An answer's body as the trace log shows it: at most [`MAX_LOGGED_BODY`] bytes of its
    /// text with the credentials scrubbed; none of getToken's (it carries the token).
    fn shown_body(&self, path: &str, bytes: &[u8]) -> String {
        if path == GET_TOKEN_PATH {
            return format!("[redacted: {} bytes holding the token]", bytes.len());
        }
        let cut = bytes.len().min(MAX_LOGGED_BODY);
        let mut text = self.scrub_text(String::from_utf8_lossy(&bytes[..cut]).into_owned());
        if cut < bytes.len() {
            text.push_str(&format!("... ({} bytes in all)", bytes.len()));
        }
        text
    }

    /// Remove the credentials (API key, client secret, bearer token) from a text.
    fn scrub_text(&self, text: String) -> String {
        let secrets: Vec<String> = match &self.inner.credentials {
            Credentials::ApiKey(key) => vec![key.expose().to_owned()],
            Credentials::ClientCredentials { client_secret, .. } => {
                let mut secrets = vec![client_secret.expose().to_owned()];
                if let Some(token) = self.inner.token.get() {
                    secrets.push(token.expose().to_owned());
                }
                secrets
            }
        };
        secrets
            .iter()
            .filter(|secret| !secret.is_empty())
            .fold(text, |text, secret| {
                text.replace(secret.as_str(), "[redacted]")
            })
    }

    /// Remove the credentials from an error's text, in case a server or proxy echoes them.
    fn scrub(&self, error: ApiError) -> ApiError {
        let clean = |text: String| self.scrub_text(text);
        match error {
            ApiError::Transient {
                detail,
                outcome_unknown,
            } => ApiError::Transient {
                detail: clean(detail),
                outcome_unknown,
            },
            ApiError::NotFound { message } => ApiError::NotFound {
                message: clean(message),
            },
            ApiError::OutOfCredits { message } => ApiError::OutOfCredits {
                message: clean(message),
            },
            ApiError::Unauthorized { code, message } => ApiError::Unauthorized {
                code,
                message: clean(message),
            },
            ApiError::Rejected { code, message } => ApiError::Rejected {
                code,
                message: clean(message),
            },
            throttled @ ApiError::Throttled { .. } => throttled,
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// Longest part of an answer's body written to the trace log.
const MAX_LOGGED_BODY: usize = 4096;

/// Most redirects followed for one request (API call or download).
const MAX_REDIRECTS: usize = 5;

/// Which redirects the shared HTTP client follows: at most [`MAX_REDIRECTS`], only to http(s)
/// URLs, and for API calls only within the API's host (same port, or https instead of http),
/// because the `x-api-key` header is not one reqwest drops when a redirect leaves the host.
/// Downloads carry no credentials and may be redirected to another host (a CDN).
fn redirect_policy(base_url: &str) -> reqwest::redirect::Policy {
    let api = Url::parse(base_url).ok();
    reqwest::redirect::Policy::custom(move |attempt| {
        let target = attempt.url();
        if !matches!(target.scheme(), "http" | "https") {
            let scheme = target.scheme().to_owned();
            return attempt.error(format!("refused a redirect to a {scheme}: URL"));
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let from_api = match (&api, attempt.previous().first()) {
            (Some(api), Some(first)) => {
                first.host_str() == api.host_str()
                    && first.port_or_known_default() == api.port_or_known_default()
            }
            _ => false,
        };
        if let (true, Some(api)) = (from_api, &api) {
            let same_host = target.host_str() == api.host_str();
            let same_port = target.port_or_known_default() == api.port_or_known_default();
            let upgrade = api.scheme() == "http" && target.scheme() == "https";
            let downgrade = api.scheme() == "https" && target.scheme() == "http";
            if !same_host || downgrade || !(same_port || upgrade) {
                return attempt.error(
                    "refused a redirect of an API call away from the API host (it would carry the credentials)",
                );
            }
        }
        attempt.follow()
    })
}

/// The base URL as an http(s) root without query, fragment or trailing slash.
fn checked_base_url(base_url: &str) -> Result<String, ApiError> {
    let trimmed = base_url.trim();
    let url = Url::parse(trimmed)
        .map_err(|error| configuration_error(format!("invalid base URL {trimmed:?}: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(configuration_error(format!(
            "invalid base URL {trimmed:?}: expected http(s)://host[:port][/path]"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(configuration_error(
            "invalid base URL: credentials in the URL are not supported; use the API key options",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(configuration_error(format!(
            "invalid base URL {trimmed:?}: it must not have a query or a fragment"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn configuration_error(message: impl Into<String>) -> ApiError {
    ApiError::Rejected {
        code: 0,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base_url: &str, credentials: Credentials) -> ClientConfig {
        ClientConfig {
            base_url: base_url.to_owned(),
            credentials,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
        }
    }

    fn key(value: &str) -> Credentials {
        Credentials::ApiKey(Secret::new(value))
    }

    #[test]
    fn base_urls_are_checked_and_normalised() {
        for (given, expected) in [
            ("https://openapi.akool.com", "https://openapi.akool.com"),
            ("https://openapi.akool.com/", "https://openapi.akool.com"),
            (
                " http://127.0.0.1:8080/root/ ",
                "http://127.0.0.1:8080/root",
            ),
        ] {
            assert_eq!(checked_base_url(given).unwrap(), expected);
        }
        for bad in [
            "",
            "openapi.akool.com",
            "ftp://host",
            "https://user:pw@host",
            "https://host/?a=1",
            "https://host/#x",
        ] {
            assert!(
                matches!(
                    Client::new(config(bad, key("k"))),
                    Err(ApiError::Rejected { code: 0, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_credentials_are_refused() {
        assert!(Client::new(config("http://h", key(" "))).is_err());
        let credentials = Credentials::ClientCredentials {
            client_id: String::new(),
            client_secret: Secret::new("s"),
        };
        assert!(Client::new(config("http://h", credentials)).is_err());
    }

    #[test]
    fn debug_output_has_no_secret() {
        let client = Client::new(config("http://h", key("sk-top-secret"))).unwrap();
        let printed = format!("{client:?}");
        assert!(printed.contains("http://h"));
        assert!(!printed.contains("sk-top-secret"), "{printed}");
    }

    #[test]
    fn scrub_removes_echoed_secrets() {
        let client = Client::new(config("http://h", key("sk-top-secret"))).unwrap();
        let error = client.scrub(ApiError::Rejected {
            code: 1003,
            message: "bad key sk-top-secret".into(),
        });
        assert_eq!(error.to_string(), "rejected (1003): bad key [redacted]");
    }
}
