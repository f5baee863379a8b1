//! Data-plane errors: JSON `{"message": ...}` with an `x-apigw-error` code.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

#[derive(Debug)]
pub struct GwError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
    /// Extra header (e.g. `Allow` for 405).
    pub header: Option<(http::HeaderName, HeaderValue)>,
}

impl GwError {
    pub const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        GwError {
            status,
            code,
            message,
            header: None,
        }
    }
    pub fn api_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ApiNotFound",
            "No API matches this host",
        )
    }
    pub fn stage_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "StageNotFound",
            "No stage with this name is deployed",
        )
    }
    pub fn resource_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "No resource matches this path",
        )
    }
    pub fn method_not_allowed(allow: HeaderValue) -> Self {
        GwError {
            header: Some((http::header::ALLOW, allow)),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The resource has no method for this HTTP verb",
            )
        }
    }
    pub fn ip_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The access control of this stage does not allow your IP address",
        )
    }
    pub fn private_api() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PrivateApi",
            "This API is PRIVATE: it is reachable only through an approved PrivateLink endpoint",
        )
    }
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            "Request body is larger than the gateway accepts",
        )
    }
    pub fn headers_too_large() -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HeadersTooLarge",
            "Request header fields are larger than the gateway accepts",
        )
    }
    pub fn bad_request(message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    pub fn invalid_path_parameter() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidPathParameter",
            "A path parameter is a dot segment or holds an encoded '/', '\\' or NUL",
        )
    }
    pub fn duplicate_host() -> Self {
        Self::bad_request("The request has more than one Host header")
    }
    pub fn missing_host() -> Self {
        Self::bad_request("An HTTP/1.1 request needs a Host header")
    }
    /// The connection is closed after it: its framing is lost.
    pub fn bad_request_body() -> Self {
        GwError {
            header: Some((http::header::CONNECTION, HeaderValue::from_static("close"))),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "BadRequestBody",
                "The request body is not validly framed",
            )
        }
    }
    pub fn body_timeout() -> Self {
        GwError {
            header: Some((http::header::CONNECTION, HeaderValue::from_static("close"))),
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "The request body did not arrive in time",
            )
        }
    }
    pub fn bad_gateway(message: &'static str) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "BadGateway", message)
    }
    pub fn integration_misconfigured() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "IntegrationMisconfigured",
            "The integration of this method is not valid; its owner must set it again",
        )
    }
    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "GatewayTimeout",
            "The integration did not answer in time",
        )
    }
    pub fn not_implemented(message: &'static str) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NotImplemented", message)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        // message is a static string with no characters needing escapes
        // beyond what serde_json handles.
        let body = serde_json::json!({ "message": self.message }).to_string();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("x-apigw-error", HeaderValue::from_static(self.code));
        if let Some((k, v)) = self.header {
            h.insert(k, v);
        }
        resp
    }
}
