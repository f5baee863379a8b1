//! SCP signature authentication of every management request, and the
//! bounded read of its body.

use super::{AdminState, ApiError, Caller};
use crate::policy::signature;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The URL as the client sent it: the configured public base URL, or
/// `http://{Host}`, followed by the raw path and query.
pub fn full_url(public_base_url: &str, req: &Request) -> Option<String> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if !public_base_url.is_empty() {
        return Some(format!("{}{pq}", public_base_url.trim_end_matches('/')));
    }
    let host = header(req, "host").or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    Some(format!("http://{host}{pq}"))
}

pub async fn require_signature(
    State(app): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    // The API's own description is public; nothing else is.
    if req.method() == http::Method::GET && req.uri().path() == super::openapi::PATH {
        return next.run(req).await;
    }
    match authenticate(&app, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The caller goes into the request's extensions ([`Caller`] is then an
/// extractor); bodies are read by the handlers' extractors
/// (`super::extract`), within axum's body limit.
async fn authenticate(app: &AdminState, mut req: Request) -> Result<Request, ApiError> {
    let caller = check(app, &req)?;
    req.extensions_mut().insert(caller);
    Ok(req)
}

/// A verified request's signature, refused when it was used before.
fn not_replayed(app: &AdminState, req: &Request) -> Result<(), ApiError> {
    use base64::Engine;
    let sig = header(req, "scp-signature")
        .and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
        })
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
    let ts = header(req, "scp-timestamp").and_then(|t| t.trim().parse::<i64>().ok());
    // Verified already: both are there and well formed.
    let (Some(sig), Some(ts)) = (sig, ts) else {
        return Err(ApiError::unauthorized(
            "unknown access key or bad signature",
        ));
    };
    if app
        .replay
        .first_use(sig, ts, chrono::Utc::now().timestamp_millis())
    {
        Ok(())
    } else {
        Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "ReplayedRequest",
            "this signed request was already received; sign each request anew".to_string(),
        ))
    }
}

fn check(app: &AdminState, req: &Request) -> Result<Caller, ApiError> {
    let url = full_url(&app.cfg.admin.public_base_url, req)
        .ok_or_else(|| ApiError::unauthorized("Host header is required"))?;
    let cred = signature::authenticate(
        &app.cfg.signature.credentials,
        app.cfg.signature.max_skew_ms(),
        req.method().as_str(),
        &url,
        req.headers(),
    )
    .map_err(|r| ApiError::unauthorized(r.message()))?;
    let account_id = header(req, "scp-accountid").unwrap_or("");
    if !account_id.is_empty() && !cred.account_id.is_empty() && account_id != cred.account_id {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "Forbidden",
            "Scp-AccountId does not belong to this access key".to_string(),
        ));
    }
    not_replayed(app, req)?;
    Ok(Caller {
        account_id: cred.account_id.clone(),
        access_key: cred.access_key.clone(),
    })
}
