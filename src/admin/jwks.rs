//! External issuers' key sets from a file or a URL (Create Auth's
//! `external_issuer.jwks_file` / `jwks_url`), and the background refresh of
//! URL-sourced ones.
//!
//! Both are chosen by whoever may call the management API, so the process
//! reads and fetches only within bounds the operator set:
//! - Files: only under `jwks_dir` (empty = `jwks_file` refused). The name
//!   is relative, made of plain components (no `..`, no absolute path),
//!   and after canonicalisation (symlinks resolved) must still be inside
//!   the directory; a regular file of at most `jwks_max_bytes`. Errors
//!   never name the directory or a path outside it and never quote the
//!   file (a JSON error gives the line and column only; a JWKS that does
//!   not validate names the element at fault, as for an inline one).
//! - URLs: one client for the process ([`fetcher`]), https only unless
//!   `jwks_allow_http`, no credentials in the URL, no redirects followed,
//!   the whole exchange within `jwks_fetch_timeout_ms`, the body at most
//!   `jwks_max_bytes`.
//! - Refresh ([`spawn_refresher`]): every URL-sourced auth is fetched again
//!   after min(`Cache-Control: max-age`, `jwks_refresh_max_secs`), never
//!   sooner than [`REFRESH_FLOOR`] (after a failure: twice the last
//!   interval, up to the cap). A changed, valid key set is committed
//!   exactly as a management write is ([`crate::admin::Inner::commit`]:
//!   store, memory, then the wait until the snapshot publisher serves it);
//!   an unchanged one commits nothing; a failed or invalid
//!   fetch is logged and the last good keys stay. An auth is first
//!   fetched when the refresher first sees it (at start, or just after
//!   Create Auth: the create-time answer's max-age is not kept). No lock
//!   is held while fetching.

use crate::admin::AdminState;
use crate::config::JwksConfig;
use crate::store::model::{Change, Entity};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Shortest time between two fetches of one auth's key set.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// Longest `jwks_url` accepted.
const MAX_URL_LEN: usize = 2048;
/// Key sets fetched at the same time by the refresher.
const REFRESH_PARALLEL: usize = 4;

/// A key set fetched from a URL, and how long the server says it is fresh.
pub struct Fetched {
    pub jwks: Value,
    pub max_age: Option<Duration>,
}

/// The process's JWKS HTTP client and its bounds.
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    max_bytes: usize,
    allow_http: bool,
}

static SHARED: OnceLock<Fetcher> = OnceLock::new();

/// The one fetcher of the process, built on first use from the (single)
/// configuration of the process.
pub fn fetcher(cfg: &JwksConfig) -> &'static Fetcher {
    SHARED.get_or_init(|| Fetcher::new(cfg))
}

impl Fetcher {
    pub fn new(cfg: &JwksConfig) -> Fetcher {
        let timeout = cfg.fetch_timeout();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots();
        let builder = if cfg.allow_http {
            builder.https_or_http()
        } else {
            builder.https_only()
        };
        let https = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        Fetcher {
            client,
            timeout,
            max_bytes: cfg.max_bytes.max(1),
            allow_http: cfg.allow_http,
        }
    }

    /// The URL, if it may be fetched; else why not (without echoing it).
    pub fn check_url(&self, url: &str) -> Result<http::Uri, String> {
        if url.is_empty() || url.len() > MAX_URL_LEN {
            return Err(format!("must be a URL of at most {MAX_URL_LEN} characters"));
        }
        let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_http => {}
            Some("http") => {
                return Err("must be https (http is refused unless jwks_allow_http is set)".into())
            }
            _ => return Err("must be an https URL".into()),
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if authority.contains('@') {
            return Err("must not carry credentials".into());
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        Ok(uri)
    }

    /// GET the JSON document at `url` within the bounds.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, String> {
        let uri = self.check_url(url)?;
        let max = self.max_bytes;
        let work = async {
            let req = http::Request::get(uri)
                .header(
                    http::header::ACCEPT,
                    "application/jwk-set+json, application/json",
                )
                .header(http::header::USER_AGENT, "apigw-jwks")
                .body(Empty::<Bytes>::new())
                .map_err(|_| "is not a URL".to_string())?;
            let resp = self.client.request(req).await.map_err(|e| {
                tracing::debug!(error = ?e, "JWKS fetch failed");
                if e.is_connect() {
                    "cannot connect (or the TLS handshake failed)".to_string()
                } else {
                    "the request failed".to_string()
                }
            })?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(format!(
                    "answered {}; redirects are not followed",
                    status.as_u16()
                ));
            }
            if !status.is_success() {
                return Err(format!("answered {}", status.as_u16()));
            }
            let too_large = || format!("the answer is larger than {max} bytes (jwks_max_bytes)");
            let declared = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Err(too_large());
            }
            let max_age = max_age(resp.headers());
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        too_large()
                    } else {
                        "reading the answer failed".to_string()
                    }
                })?
                .to_bytes();
            let jwks = parse_json(&body)?;
            Ok(Fetched { jwks, max_age })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                format!(
                    "no complete answer within {} ms (jwks_fetch_timeout_ms)",
                    self.timeout.as_millis()
                )
            })?
    }
}

/// JSON, or where it stops being JSON (never the content itself).
fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("is not JSON (line {}, column {})", e.line(), e.column()))
}

/// `max-age` of the `Cache-Control` header(s), if any.
pub fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (k, v) = d.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            v.trim().trim_matches('"').parse::<u64>().ok()
        })
        .map(Duration::from_secs)
}

/// When to fetch again: the server's `max-age` capped by the setting,
/// never sooner than [`REFRESH_FLOOR`].
pub fn refresh_interval(max_age: Option<Duration>, cap: Duration) -> Duration {
    max_age.map_or(cap, |a| a.min(cap)).max(REFRESH_FLOOR)
}

/// Read `name` under `cfg.dir` (`jwks_dir`), which it may not leave.
pub async fn read_file(cfg: &JwksConfig, name: &str) -> Result<Value, String> {
    if cfg.dir.is_empty() {
        return Err("reading JWKS files is off on this gateway (jwks_dir is not set)".into());
    }
    let dir = crate::net::confined::Confined {
        dir: std::path::Path::new(&cfg.dir),
        setting: "jwks_dir",
        max_bytes: cfg.max_bytes,
        max_setting: "jwks_max_bytes",
    };
    parse_json(&dir.read(name).await?)
}

/// Whether a stored `jwks_source` is a URL the refresher fetches.
pub fn is_url_source(source: &str) -> bool {
    source.starts_with("https://") || source.starts_with("http://")
}

/// One URL-sourced auth as the refresher tracks it.
struct Tracked {
    url: String,
    due: Instant,
    interval: Duration,
}

/// (api id, auth id)
type Key = (String, String);

/// Start refreshing URL-sourced key sets in the background (nothing when
/// `jwks_refresh_max_secs` is 0).
pub fn spawn_refresher(app: AdminState) {
    if app.cfg.jwks.refresh_max_secs == 0 {
        return;
    }
    tokio::spawn(refresh_loop(app));
}

async fn refresh_loop(app: AdminState) {
    let cap = Duration::from_secs(app.cfg.jwks.refresh_max_secs.max(1));
    let fetcher = fetcher(&app.cfg.jwks);
    let gate = Arc::new(tokio::sync::Semaphore::new(REFRESH_PARALLEL));
    let mut tracked: HashMap<Key, Tracked> = HashMap::new();
    loop {
        // Which auths have URL keys now: a short read lock, no I/O.
        let current: Vec<(Key, String)> = {
            let st = app.state.read().await;
            st.apis
                .iter()
                .flat_map(|(api_id, a)| {
                    a.auths.values().filter_map(move |auth| {
                        let x = auth.external.as_ref()?;
                        is_url_source(&x.jwks_source)
                            .then(|| ((api_id.clone(), auth.id.clone()), x.jwks_source.clone()))
                    })
                })
                .collect()
        };
        let now = Instant::now();
        let mut seen: HashMap<Key, String> = current.into_iter().collect();
        tracked.retain(|k, t| seen.get(k) == Some(&t.url));
        for (k, url) in seen.drain() {
            // A newly seen auth is fetched at once: its max-age is unknown.
            tracked.entry(k).or_insert(Tracked {
                url,
                due: now,
                interval: cap,
            });
        }

        // Fetch the due ones, a few at a time, without any lock held.
        let mut jobs = tokio::task::JoinSet::new();
        for (k, t) in tracked.iter().filter(|(_, t)| t.due <= now) {
            let (k, url, gate) = (k.clone(), t.url.clone(), gate.clone());
            jobs.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let r = fetcher.fetch(&url).await;
                (k, url, r)
            });
        }
        while let Some(done) = jobs.join_next().await {
            let Ok((k, url, r)) = done else { continue };
            let interval = match r.and_then(|f| {
                crate::jwt::validate_jwks(&f.jwks)
                    .map(|_| f)
                    .map_err(|e| format!("not a usable JWKS: {e}"))
            }) {
                Ok(f) => {
                    if let Err(e) = store_if_changed(&app, &k, &url, f.jwks).await {
                        tracing::warn!(api = %k.0, auth = %k.1, error = %e, "JWKS refresh not stored; the last good keys stay");
                    }
                    Some(refresh_interval(f.max_age, cap))
                }
                Err(e) => {
                    tracing::warn!(api = %k.0, auth = %k.1, host = %host_of(&url), error = %e,
                        "JWKS refresh failed; the last good keys stay");
                    None
                }
            };
            if let Some(t) = tracked.get_mut(&k) {
                // After a failure: back off, doubling up to the cap.
                t.interval = interval.unwrap_or_else(|| (t.interval * 2).min(cap));
                t.due = Instant::now() + t.interval;
            }
        }

        // Sleep until the next one is due, but look for new auths every floor.
        let next = tracked
            .values()
            .map(|t| t.due)
            .min()
            .unwrap_or_else(|| Instant::now() + REFRESH_FLOOR);
        tokio::time::sleep_until(next.min(Instant::now() + REFRESH_FLOOR)).await;
    }
}

/// Commit the fetched key set if it differs from the stored one and the
/// auth still takes its keys from `url`; true when committed.
async fn store_if_changed(
    app: &AdminState,
    (api_id, auth_id): &Key,
    url: &str,
    jwks: Value,
) -> Result<bool, String> {
    let differs = |st: &crate::store::State| {
        st.api(api_id)
            .and_then(|a| a.auths.get(auth_id))
            .and_then(|a| a.external.as_ref().map(|x| (a, x)))
            .filter(|(_, x)| x.jwks_source == url && x.jwks != jwks)
            .map(|(a, _)| a.clone())
    };
    if differs(&*app.state.read().await).is_none() {
        return Ok(false);
    }
    let mut st = app.state.write().await;
    // Checked again: the auth may have changed while the lock was free.
    let Some(mut auth) = differs(&st) else {
        return Ok(false);
    };
    if let Some(x) = auth.external.as_mut() {
        x.jwks = jwks;
    }
    app.commit(&mut st, vec![Change::Put(Entity::Auth(auth))])
        .await
        .map_err(|e| e.detail)?;
    tracing::info!(api = %api_id, auth = %auth_id, "JWKS refreshed: new keys in use");
    Ok(true)
}

/// The host of a URL, for logs (never the path or query).
fn host_of(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> Option<Duration> {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
        max_age(&h)
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(cc("max-age=1"), Some(Duration::from_secs(1)));
        assert_eq!(
            cc("public, Max-Age = 600 , must-revalidate"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(cc("no-cache"), None);
        assert_eq!(cc("max-age=soon"), None);
        assert_eq!(max_age(&http::HeaderMap::new()), None);
    }

    #[test]
    fn interval_is_capped_and_floored() {
        let cap = Duration::from_secs(300);
        assert_eq!(refresh_interval(None, cap), cap);
        assert_eq!(refresh_interval(Some(Duration::from_secs(3600)), cap), cap);
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(60)), cap),
            Duration::from_secs(60)
        );
        assert_eq!(refresh_interval(Some(Duration::ZERO), cap), REFRESH_FLOOR);
    }

    #[test]
    fn urls_are_checked() {
        let mut cfg = JwksConfig::default();
        let f = Fetcher::new(&cfg);
        assert!(f.check_url("https://idp.example/jwks").is_ok());
        assert!(f.check_url("http://idp.example/jwks").is_err());
        assert!(f.check_url("file:///etc/passwd").is_err());
        assert!(f.check_url("https://user:pw@idp.example/jwks").is_err());
        assert!(f.check_url("/jwks").is_err());
        cfg.allow_http = true;
        let f = Fetcher::new(&cfg);
        assert!(f.check_url("http://127.0.0.1:8/jwks").is_ok());
    }

    #[tokio::test]
    async fn files_stay_inside_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(keys.join("ok.json"), r#"{"keys":[]}"#).unwrap();
        std::fs::write(dir.path().join("outside.json"), r#"{"keys":[]}"#).unwrap();
        let mut cfg = JwksConfig::default();
        assert!(read_file(&cfg, "ok.json")
            .await
            .unwrap_err()
            .contains("off"));
        cfg.dir = keys.display().to_string();
        assert!(read_file(&cfg, "ok.json").await.is_ok());
        for bad in [
            "../outside.json",
            "/etc/passwd",
            "",
            ".",
            "a/../../outside.json",
        ] {
            assert!(read_file(&cfg, bad).await.is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("outside.json"), keys.join("link.json"))
                .unwrap();
            let e = read_file(&cfg, "link.json").await.unwrap_err();
            assert!(!e.contains(&dir.path().display().to_string()), "{e}");
        }
        std::fs::create_dir(keys.join("sub")).unwrap();
        let e = read_file(&cfg, "sub").await.unwrap_err();
        assert!(e.contains("regular file"), "{e}");
        cfg.max_bytes = 4;
        assert!(read_file(&cfg, "ok.json")
            .await
            .unwrap_err()
            .contains("larger"));
    }
}
