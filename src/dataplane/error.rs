//! Data-plane errors: one [`ErrorCode`] per `x-apigw-error` code, answered
//! as JSON `{"message": ...}` with that code in the `x-apigw-error` header.
//!
//! A filter (or the upstream phase) returns the code and nothing else: the
//! status, the message and the extra header of each code are decided here
//! and nowhere else. The set of codes is closed, so [`ErrorCode::as_str`]
//! is a bounded label (for metrics). The few codes that change per request
//! carry what they need beside the code: `Allow` for 405 and the
//! `Retry-After` seconds for 429s; `WWW-Authenticate: Bearer` (401s) and
//! `Connection: close` (broken request bodies) follow from the code.
//!
//! The codes and messages are documented (README) and asserted by tests:
//! change none of them.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why the gateway answered instead of the integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// 404: the host names no API.
    ApiNotFound,
    /// 404: the API has no stage of that name with a deployment.
    StageNotFound,
    /// 404: no resource of the deployment matches the path.
    ResourceNotFound,
    /// 404: the host is a custom domain, but none of its base path
    /// mappings takes the path.
    BasePathNotFound,
    /// 405, with `Allow` listing the resource's methods.
    MethodNotAllowed { allow: HeaderValue },
    /// 403: the stage's access control does not allow the client address.
    Forbidden,
    /// 403: a PRIVATE API reached on the public listener.
    PrivateApi,
    /// 403: on the private listener, the connection's PrivateLink
    /// endpoint (PROXY v2 TLV 0xEA) is missing, not Active, or not
    /// connected to the API; or the API is not PRIVATE.
    PrivateEndpointNotConnected,
    /// 413: the declared or streamed body is over the limit.
    PayloadTooLarge,
    /// 431: the header block is over the limit.
    HeadersTooLarge,
    /// 400, with the reason's message.
    BadRequest(BadRequest),
    /// 400: a path parameter is a dot segment or holds an encoded separator.
    InvalidPathParameter,
    /// 400: a query string or header the method marks required is
    /// missing or empty (AWS request validation); the message names it.
    MissingRequiredParameter {
        kind: ParamKind,
        name: std::sync::Arc<str>,
    },
    /// 400 + `Connection: close`: the request body's framing broke.
    BadRequestBody,
    /// 408 + `Connection: close`: the request body did not arrive in time.
    RequestTimeout,
    /// 502, with the reason's message.
    BadGateway(BadGateway),
    /// 502: the method's integration is stored but not usable.
    IntegrationMisconfigured,
    /// 504: the integration did not answer in time.
    GatewayTimeout,
    /// 502: the function's reply is not a Lambda proxy response (or is
    /// over 6 MiB).
    FunctionBadReply(BadReply),
    /// 502: the function endpoint failed, could not be reached, or
    /// answered a non-2xx status.
    FunctionError,
    /// 504: the function did not answer within its timeout.
    FunctionTimeout,
    /// 503: the PRIVATELINK method's endpoint is not Active (or not of
    /// the API's account), or its service cannot be reached (private
    /// listener off).
    PrivateLinkUnavailable,
    /// 403: `x-scp-apikey` is required and absent.
    ApiKeyMissing,
    /// 403: no API key of the API has this value.
    ApiKeyInvalid,
    /// 403: a key of the API that is not connected to the stage.
    ApiKeyNotConnected,
    /// 429: the key's quota for its window is used up; retry after the
    /// window ends.
    QuotaExceeded { retry_after: u64 },
    /// 429: the shared quota counters (Redis) are unreachable and
    /// `quota.redis_unavailable = "closed"`: the call is refused, not
    /// counted; retry in a second. A 4xx: the client did nothing wrong,
    /// but its quota cannot be checked, and that is no server fault to
    /// retry blindly either.
    QuotaUnavailable,
    /// 429: the stage's (or method's) rate limit; retry after this many
    /// seconds.
    Throttled { retry_after: u64 },
    /// 403: a Deny statement of the resource policy matches.
    PolicyDenied,
    /// 403: no Allow statement of the resource policy matches.
    PolicyNotAllowed,
    /// 403: a preflight from an origin the stage's CORS does not allow.
    CorsOriginDenied,
    /// 401 (JWT): no `Authorization: Bearer` token.
    TokenMissing,
    /// 401 (JWT): the header or the token is malformed.
    TokenMalformed,
    /// 401 (JWT): the signature does not verify.
    TokenBadSignature,
    /// 401 (JWT): expired or not yet valid.
    TokenExpired,
    /// 401 (JWT): no key of the stage's auths is for this token.
    TokenNotForStage,
    /// 401 (JWT): the token could not be processed.
    TokenInternalError,
}

/// The reasons of a 400 `BadRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    DuplicateHost,
    MissingHost,
    ContentLength,
    MissingOrigin,
}

/// Where a required request parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    QueryString,
    Header,
}

impl ParamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::QueryString => "query string",
            ParamKind::Header => "header",
        }
    }
}

/// The reasons of a 502 `BadGateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadGateway {
    /// The endpoint URL made from the method's template is not valid.
    EndpointUrl,
    /// No connection could be made.
    Unreachable,
    /// The connection failed before a response head arrived.
    NoAnswer,
}

/// The reasons of a 502 `FunctionBadReply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// Not JSON, or not the proxy response shape.
    Shape,
    /// Over Lambda's 6 MiB limit.
    TooLarge,
}

/// What an error code answers: status, code, message and the message as
/// the JSON body (static: an error answer allocates no body).
struct Spec {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    body: &'static str,
}

/// `spec!(STATUS, "Code", "message")`; a message with characters JSON
/// escapes also gives its escaped form (checked by a test).
macro_rules! spec {
    ($status:ident, $code:literal, $msg:literal) => {
        spec!($status, $code, $msg, $msg)
    };
    ($status:ident, $code:literal, $msg:literal, $json:literal) => {
        &Spec {
            status: StatusCode::$status,
            code: $code,
            message: $msg,
            body: concat!("{\"message\":\"", $json, "\"}"),
        }
    };
}

impl ErrorCode {
    fn spec(&self) -> &'static Spec {
        use ErrorCode::*;
        match self {
            ApiNotFound => spec!(NOT_FOUND, "ApiNotFound", "No API matches this host"),
            StageNotFound => spec!(
                NOT_FOUND,
                "StageNotFound",
                "No stage with this name is deployed"
            ),
            ResourceNotFound => spec!(
                NOT_FOUND,
                "ResourceNotFound",
                "No resource matches this path"
            ),
            BasePathNotFound => spec!(
                NOT_FOUND,
                "BasePathNotFound",
                "No base path mapping of this domain matches this path"
            ),
            MethodNotAllowed { .. } => spec!(
                METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The resource has no method for this HTTP verb"
            ),
            Forbidden => spec!(
                FORBIDDEN,
                "Forbidden",
                "The access control of this stage does not allow your IP address"
            ),
            PrivateApi => spec!(
                FORBIDDEN,
                "PrivateApi",
                "This API is PRIVATE: it is reachable only through an approved PrivateLink endpoint"
            ),
            PrivateEndpointNotConnected => spec!(
                FORBIDDEN,
                "PrivateEndpointNotConnected",
                "The connection's PrivateLink endpoint is not an Active endpoint connected to this PRIVATE API"
            ),
            PayloadTooLarge => spec!(
                PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "Request body is larger than the gateway accepts"
            ),
            HeadersTooLarge => spec!(
                REQUEST_HEADER_FIELDS_TOO_LARGE,
                "HeadersTooLarge",
                "Request header fields are larger than the gateway accepts"
            ),
            BadRequest(self::BadRequest::DuplicateHost) => spec!(
                BAD_REQUEST,
                "BadRequest",
                "The request has more than one Host header"
            ),
            BadRequest(self::BadRequest::MissingHost) => spec!(
                BAD_REQUEST,
                "BadRequest",
                "An HTTP/1.1 request needs a Host header"
            ),
            BadRequest(self::BadRequest::ContentLength) => {
                spec!(BAD_REQUEST, "BadRequest", "Content-Length is not a number")
            }
            BadRequest(self::BadRequest::MissingOrigin) => {
                spec!(BAD_REQUEST, "BadRequest", "Origin is required")
            }
            InvalidPathParameter => spec!(
                BAD_REQUEST,
                "InvalidPathParameter",
                "A path parameter is a dot segment or holds an encoded '/', '\\' or NUL",
                "A path parameter is a dot segment or holds an encoded '/', '\\\\' or NUL"
            ),
            MissingRequiredParameter { .. } => spec!(
                BAD_REQUEST,
                "MissingRequiredParameter",
                "A required request parameter is missing"
            ),
            BadRequestBody => spec!(
                BAD_REQUEST,
                "BadRequestBody",
                "The request body is not validly framed"
            ),
            RequestTimeout => spec!(
                REQUEST_TIMEOUT,
                "RequestTimeout",
                "The request body did not arrive in time"
            ),
            BadGateway(self::BadGateway::EndpointUrl) => spec!(
                BAD_GATEWAY,
                "BadGateway",
                "The integration endpoint URL is not valid"
            ),
            BadGateway(self::BadGateway::Unreachable) => spec!(
                BAD_GATEWAY,
                "BadGateway",
                "The integration endpoint could not be reached"
            ),
            BadGateway(self::BadGateway::NoAnswer) => spec!(
                BAD_GATEWAY,
                "BadGateway",
                "The integration endpoint failed to answer"
            ),
            IntegrationMisconfigured => spec!(
                BAD_GATEWAY,
                "IntegrationMisconfigured",
                "The integration of this method is not valid; its owner must set it again"
            ),
            GatewayTimeout => spec!(
                GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "The integration did not answer in time"
            ),
            FunctionBadReply(BadReply::Shape) => spec!(
                BAD_GATEWAY,
                "FunctionBadReply",
                "The function's reply is not a valid proxy integration response"
            ),
            FunctionBadReply(BadReply::TooLarge) => spec!(
                BAD_GATEWAY,
                "FunctionBadReply",
                "The function's reply is larger than 6 MiB"
            ),
            FunctionError => spec!(
                BAD_GATEWAY,
                "FunctionError",
                "The function failed or could not be reached"
            ),
            FunctionTimeout => spec!(
                GATEWAY_TIMEOUT,
                "FunctionTimeout",
                "The function did not answer within its timeout"
            ),
            PrivateLinkUnavailable => spec!(
                SERVICE_UNAVAILABLE,
                "PrivateLinkUnavailable",
                "The PrivateLink endpoint of this method is not Active or its service is not reachable"
            ),
            ApiKeyMissing => spec!(
                FORBIDDEN,
                "ApiKeyMissing",
                "This method requires an API key in the x-scp-apikey header"
            ),
            ApiKeyInvalid => spec!(FORBIDDEN, "ApiKeyInvalid", "Unknown API key"),
            ApiKeyNotConnected => spec!(
                FORBIDDEN,
                "ApiKeyNotConnected",
                "This API key is not connected to the stage"
            ),
            QuotaExceeded { .. } => spec!(
                TOO_MANY_REQUESTS,
                "QuotaExceeded",
                "The API key's quota for this period is used up"
            ),
            QuotaUnavailable => spec!(
                TOO_MANY_REQUESTS,
                "QuotaUnavailable",
                "The API key's quota cannot be checked now; retry shortly"
            ),
            Throttled { .. } => spec!(
                TOO_MANY_REQUESTS,
                "Throttled",
                "Too many requests: the stage's rate limit is exceeded"
            ),
            PolicyDenied => spec!(
                FORBIDDEN,
                "PolicyDenied",
                "The resource policy of this API explicitly denies this request"
            ),
            PolicyNotAllowed => spec!(
                FORBIDDEN,
                "PolicyNotAllowed",
                "No statement of the resource policy of this API allows this request"
            ),
            CorsOriginDenied => spec!(
                FORBIDDEN,
                "CorsOriginDenied",
                "This origin is not allowed by the stage's CORS configuration"
            ),
            TokenMissing => spec!(
                UNAUTHORIZED,
                "TokenMissing",
                "Missing Authorization header with a Bearer token"
            ),
            TokenMalformed => spec!(
                UNAUTHORIZED,
                "TokenMalformed",
                "Malformed Authorization header or bearer token"
            ),
            TokenBadSignature => spec!(
                UNAUTHORIZED,
                "TokenBadSignature",
                "Token signature is not valid"
            ),
            TokenExpired => spec!(
                UNAUTHORIZED,
                "TokenExpired",
                "Token is expired or not yet valid"
            ),
            TokenNotForStage => spec!(
                UNAUTHORIZED,
                "TokenNotForStage",
                "Token is not valid for this stage"
            ),
            TokenInternalError => spec!(
                UNAUTHORIZED,
                "TokenInternalError",
                "Token could not be processed"
            ),
        }
    }

    /// The `x-apigw-error` value (a bounded set: a metrics label).
    pub fn as_str(&self) -> &'static str {
        self.spec().code
    }

    pub fn status(&self) -> StatusCode {
        self.spec().status
    }

    pub fn message(&self) -> &'static str {
        self.spec().message
    }

    /// The header that goes with the code, if any.
    fn header(self) -> Option<(HeaderName, HeaderValue)> {
        use ErrorCode::*;
        match self {
            MethodNotAllowed { allow } => Some((http::header::ALLOW, allow)),
            QuotaExceeded { retry_after } | Throttled { retry_after } => Some((
                http::header::RETRY_AFTER,
                crate::dataplane::filters::api_key::number(retry_after),
            )),
            QuotaUnavailable => Some((http::header::RETRY_AFTER, HeaderValue::from_static("1"))),
            TokenMissing | TokenMalformed | TokenBadSignature | TokenExpired | TokenNotForStage
            | TokenInternalError => Some((
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            )),
            // The connection is closed after these: its framing is lost.
            BadRequestBody | RequestTimeout => {
                Some((http::header::CONNECTION, HeaderValue::from_static("close")))
            }
            _ => None,
        }
    }

    /// The gateway's answer for this code.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let spec = self.spec();
        let body = match &self {
            // The one message that names something of the request.
            ErrorCode::MissingRequiredParameter { kind, name } => Bytes::from(
                serde_json::json!({
                    "message": format!(
                        "Missing required request parameter: {} '{name}'",
                        kind.as_str()
                    )
                })
                .to_string(),
            ),
            _ => Bytes::from_static(spec.body.as_bytes()),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = spec.status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(X_APIGW_ERROR.clone(), HeaderValue::from_static(spec.code));
        if let Some((k, v)) = self.header() {
            h.insert(k, v);
        }
        resp
    }
}

pub static X_APIGW_ERROR: HeaderName = HeaderName::from_static("x-apigw-error");

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.as_str(), self.message())
    }
}

impl std::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code (one of each shape).
    fn all() -> Vec<ErrorCode> {
        use ErrorCode::*;
        vec![
            ApiNotFound,
            StageNotFound,
            ResourceNotFound,
            BasePathNotFound,
            MethodNotAllowed {
                allow: HeaderValue::from_static("GET, POST"),
            },
            Forbidden,
            PrivateApi,
            PrivateEndpointNotConnected,
            PayloadTooLarge,
            HeadersTooLarge,
            BadRequest(self::BadRequest::DuplicateHost),
            BadRequest(self::BadRequest::MissingHost),
            BadRequest(self::BadRequest::ContentLength),
            BadRequest(self::BadRequest::MissingOrigin),
            InvalidPathParameter,
            MissingRequiredParameter {
                kind: ParamKind::Header,
                name: "x-trace".into(),
            },
            BadRequestBody,
            RequestTimeout,
            BadGateway(self::BadGateway::EndpointUrl),
            BadGateway(self::BadGateway::Unreachable),
            BadGateway(self::BadGateway::NoAnswer),
            IntegrationMisconfigured,
            GatewayTimeout,
            FunctionBadReply(BadReply::Shape),
            FunctionBadReply(BadReply::TooLarge),
            FunctionError,
            FunctionTimeout,
            PrivateLinkUnavailable,
            ApiKeyMissing,
            ApiKeyInvalid,
            ApiKeyNotConnected,
            QuotaExceeded { retry_after: 7 },
            QuotaUnavailable,
            Throttled { retry_after: 1 },
            PolicyDenied,
            PolicyNotAllowed,
            CorsOriginDenied,
            TokenMissing,
            TokenMalformed,
            TokenBadSignature,
            TokenExpired,
            TokenNotForStage,
            TokenInternalError,
        ]
    }

    #[test]
    fn bodies_are_the_json_of_their_message() {
        for code in all() {
            let spec = code.spec();
            let want = serde_json::json!({ "message": spec.message }).to_string();
            assert_eq!(spec.body, want, "{code:?}");
            assert_eq!(
                code.as_str(),
                format!("{code:?}").split(['(', ' ']).next().unwrap()
            );
        }
    }

    #[test]
    fn answers_carry_code_status_and_header() {
        let r = ErrorCode::Throttled { retry_after: 3 }.into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["x-apigw-error"], "Throttled");
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = ErrorCode::TokenExpired.into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = ErrorCode::MethodNotAllowed {
            allow: HeaderValue::from_static("GET"),
        }
        .into_response();
        assert_eq!(r.headers()["allow"], "GET");
        let r = ErrorCode::MissingRequiredParameter {
            kind: ParamKind::QueryString,
            name: "page_no".into(),
        }
        .into_response();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["x-apigw-error"], "MissingRequiredParameter");
        let r = ErrorCode::BadRequestBody.into_response();
        assert_eq!(r.headers()["connection"], "close");
        assert!(!ErrorCode::ApiNotFound
            .into_response()
            .headers()
            .contains_key("connection"));
    }
}
