//! SCP signature authentication of every management request, and the
//! bounded read of its body.

use super::{AdminState, ApiError, Caller};
use crate::signature::{verify, Signed};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

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
    match authenticate(&app, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn authenticate(app: &AdminState, req: Request) -> Result<Request, ApiError> {
    let caller = check(app, &req)?;
    let (parts, body) = req.into_parts();
    let limit = app.cfg.max_admin_body_bytes;
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| ApiError::too_large(format!("request body is larger than {limit} bytes")))?
        .to_bytes();
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(caller);
    Ok(req)
}

fn check(app: &AdminState, req: &Request) -> Result<Caller, ApiError> {
    let access_key = header(req, "scp-accesskey")
        .ok_or_else(|| ApiError::unauthorized("Scp-AccessKey header is required"))?;
    let signature = header(req, "scp-signature")
        .ok_or_else(|| ApiError::unauthorized("Scp-Signature header is required"))?;
    let timestamp = header(req, "scp-timestamp")
        .ok_or_else(|| ApiError::unauthorized("Scp-Timestamp header is required"))?;
    let client_type = header(req, "scp-clienttype").unwrap_or("");
    let account_id = header(req, "scp-accountid").unwrap_or("");

    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| ApiError::unauthorized("Scp-Timestamp must be Unix time in milliseconds"))?;
    let now = chrono::Utc::now().timestamp_millis();
    if (now - ts).abs() > app.cfg.signature_max_skew_secs.saturating_mul(1000) {
        return Err(ApiError::unauthorized(
            "Scp-Timestamp is too far from the server's clock",
        ));
    }
    let cred = app
        .cfg
        .credentials
        .iter()
        .find(|c| c.access_key == access_key)
        .ok_or_else(|| ApiError::unauthorized("unknown access key or bad signature"))?;
    let url = full_url(&app.cfg.public_base_url, req)
        .ok_or_else(|| ApiError::unauthorized("Host header is required"))?;
    let signed = Signed {
        method: req.method().as_str(),
        url: &url,
        timestamp,
        access_key,
        account_id,
        client_type,
    };
    if !verify(&cred.secret_key, &signed, signature) {
        return Err(ApiError::unauthorized(
            "unknown access key or bad signature",
        ));
    }
    if !account_id.is_empty() && !cred.account_id.is_empty() && account_id != cred.account_id {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "Forbidden",
            "Scp-AccountId does not belong to this access key".to_string(),
        ));
    }
    Ok(Caller {
        account_id: cred.account_id.clone(),
        access_key: cred.access_key.clone(),
    })
}
