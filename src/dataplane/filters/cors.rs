//! CORS per stage: the gateway answers preflights itself when the stage
//! has CORS on, and adds `Access-Control-Allow-Origin` (+ Expose-Headers,
//! credentials, `Vary: Origin`) to every response for an allowed origin,
//! gateway errors included, so a browser shows the real error.
//! Everything is compiled from the stage configuration at snapshot time.
//! As a request filter it answers preflights (`Flow::Answer`, 204, or
//! 403 `CorsOriginDenied`); as a response filter it decorates answers.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter, ResponseCtx, ResponseFilter};
use crate::dataplane::error::BadRequest;
use crate::dataplane::RespBody;
pub use crate::snapshot::cors::StageCors;
use bytes::Bytes;
use http::header::*;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

pub struct Cors;

impl RequestFilter for Cors {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        let cors = &ctx.routed()?.stage.cors;
        if cors.is_preflight(req) {
            cors.preflight(&req.headers).map(Flow::Answer)
        } else {
            Ok(Flow::Continue)
        }
    }
}

impl ResponseFilter for Cors {
    /// CORS response headers, on backend answers and gateway errors alike.
    fn response_filter(ctx: &mut ResponseCtx, resp: &mut Response<RespBody>) {
        if let (Some(stage), Some(acao)) = (&ctx.stage, ctx.allow_origin.take()) {
            stage.cors.decorate(acao, resp.headers_mut());
        }
    }
}

impl StageCors {
    /// The Access-Control-Allow-Origin value for this origin, if allowed.
    ///
    /// Never a clone of the client's value: that would share the
    /// connection's read buffer and keep hyper from reusing it for the
    /// next request (hyper #4060) while the answer is awaited. It is
    /// `*`, the configured origin (the snapshot's value), or, echoing
    /// any origin with credentials, a copy.
    pub fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if !self.enabled {
            return None;
        }
        if self.any_origin {
            return if self.credentials {
                HeaderValue::from_bytes(origin.as_bytes()).ok()
            } else {
                Some(HeaderValue::from_static("*"))
            };
        }
        self.origins.iter().find(|o| *o == origin).cloned()
    }

    pub fn is_preflight(&self, req: &Parts) -> bool {
        self.enabled
            && req.method == Method::OPTIONS
            && req.headers.contains_key(ORIGIN)
            && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answer a preflight without calling the backend.
    pub fn preflight(&self, req_headers: &HeaderMap) -> Result<Response<Full<Bytes>>, ErrorCode> {
        let origin = req_headers
            .get(ORIGIN)
            .ok_or(ErrorCode::BadRequest(BadRequest::MissingOrigin))?;
        let Some(acao) = self.allow_origin(origin) else {
            return Err(ErrorCode::CorsOriginDenied);
        };
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, acao);
        if let Some(m) = &self.allow_methods {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, m.clone());
        }
        match (
            &self.allow_headers,
            req_headers.get(ACCESS_CONTROL_REQUEST_HEADERS),
        ) {
            (Some(list), _) => {
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, list.clone());
            }
            (None, Some(asked)) => {
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            (None, None) => {}
        }
        if let Some(a) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, a.clone());
        }
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.append(VARY, HeaderValue::from_static("Origin"));
        Ok(resp)
    }

    /// CORS headers on an actual (or error) response, for an origin
    /// [`StageCors::allow_origin`] allowed.
    pub fn decorate(&self, acao: HeaderValue, h: &mut HeaderMap) {
        let star = acao == "*";
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, acao);
        if let Some(e) = &self.expose_headers {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !star {
            h.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Cors;

    fn cors(origins: &[&str], credentials: bool) -> StageCors {
        StageCors::compile(&Cors {
            cors_enabled: true,
            allow_origins: Some(origins.iter().map(|s| s.to_string()).collect()),
            allow_methods: Some(vec!["GET".into(), "POST".into()]),
            allow_headers: Some(vec!["X-Custom".into(), "Content-Type".into()]),
            expose_headers: Some(vec!["X-Request-Id".into()]),
            max_age: Some(600),
            allow_credentials: Some(credentials),
        })
    }

    #[test]
    fn preflight_for_listed_origin() {
        let c = cors(&["http://app.example"], false);
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("http://app.example"));
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        let r = c.preflight(&h).unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://app.example"
        );
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_HEADERS],
            "X-Custom, Content-Type"
        );
        assert_eq!(r.headers()[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(r.headers()[VARY], "Origin");
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert_eq!(c.preflight(&h).unwrap_err(), ErrorCode::CorsOriginDenied);
    }

    /// What `decorate` adds for an origin `allow_origin` let through.
    fn decorated(c: &StageCors, origin: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(acao) = c.allow_origin(&HeaderValue::from_static(origin)) {
            c.decorate(acao, &mut h);
        }
        h
    }

    #[test]
    fn decorate_star_and_credentials() {
        let h = decorated(&cors(&["*"], false), "http://a");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(VARY));
        let h = decorated(&cors(&["*"], true), "http://a");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "http://a");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(decorated(&StageCors::default(), "http://a").is_empty());
    }

    #[test]
    fn decorate_listed_origin_only() {
        let c = cors(&["http://app.example"], false);
        let h = decorated(&c, "http://app.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "http://app.example");
        assert_eq!(h[VARY], "Origin");
        assert!(decorated(&c, "http://evil.example").is_empty());
    }
}
