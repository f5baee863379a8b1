//! A stage's CORS configuration compiled once per snapshot into header
//! values; the data plane's CORS filter (`dataplane::filters::cors`)
//! answers preflights and decorates responses from it.

use crate::store::model::Cors;
use http::HeaderValue;

const ALL_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";

#[derive(Clone, Debug, Default)]
pub struct StageCors {
    pub(crate) enabled: bool,
    pub(crate) any_origin: bool,
    pub(crate) origins: Vec<HeaderValue>,
    pub(crate) allow_methods: Option<HeaderValue>,
    /// None: echo Access-Control-Request-Headers.
    pub(crate) allow_headers: Option<HeaderValue>,
    pub(crate) expose_headers: Option<HeaderValue>,
    pub(crate) max_age: Option<HeaderValue>,
    pub(crate) credentials: bool,
}

fn join(list: &[String]) -> Option<HeaderValue> {
    HeaderValue::from_str(&list.join(", ")).ok()
}

impl StageCors {
    pub fn compile(c: &Cors) -> StageCors {
        if !c.cors_enabled {
            return StageCors::default();
        }
        let origins = c.allow_origins.clone().unwrap_or_else(|| vec!["*".into()]);
        let any_origin = origins.is_empty() || origins.iter().any(|o| o == "*");
        let methods = match &c.allow_methods {
            Some(m) if !m.is_empty() && !m.iter().any(|x| x == "ANY") => join(m),
            _ => Some(HeaderValue::from_static(ALL_METHODS)),
        };
        let allow_headers = match &c.allow_headers {
            Some(h) if !h.is_empty() && !h.iter().any(|x| x == "*") => join(h),
            _ => None,
        };
        StageCors {
            enabled: true,
            any_origin,
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
                .collect(),
            allow_methods: methods,
            allow_headers,
            expose_headers: c
                .expose_headers
                .as_deref()
                .filter(|e| !e.is_empty())
                .and_then(join),
            max_age: c.max_age.map(HeaderValue::from),
            credentials: c.allow_credentials.unwrap_or(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
}
