//! Cloud Function (SCF) integration: the request becomes the AWS Lambda
//! proxy integration event (payload format 1.0), POSTed as JSON to the
//! function's url through the same pooled client as HTTP integrations;
//! the function's JSON reply (`statusCode`, `headers`,
//! `multiValueHeaders`, `body`, `isBase64Encoded`) becomes the response.
//! Function code written for AWS runs unchanged behind a host that calls
//! `handler(event, context)` with the body it receives.
//!
//! [`prepare`] builds the event from the request head (synchronously);
//! [`call`] reads the whole body (bounded at [`MAX_PAYLOAD`], Lambda's
//! limit), sends the event and maps the reply. Only this path is boxed:
//! HTTP integrations pay nothing for it.

use super::Outbound;
use crate::dataplane::ctx::RequestCtx;
use crate::dataplane::error::{BadReply, ErrorCode};
use crate::dataplane::upstream::http::body::{BoxError, ClientBody, LimitedBody};
use crate::dataplane::upstream::http::{strip_hop_by_hop, HttpClient};
use crate::dataplane::RespBody;
use crate::snapshot::FunctionTarget;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Lambda's payload limit, for the request body and for the reply.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// A function call made ready: the event without its body, and the body
/// still to read.
pub struct FunctionCall {
    function: Arc<FunctionTarget>,
    event: Map<String, Value>,
    body: ClientBody,
    body_limit: usize,
}

fn text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `name -> last value` and `name -> [values]`, both `null` when empty
/// (as Lambda's format 1.0).
fn single_and_multi(pairs: Vec<(String, String)>) -> (Value, Value) {
    if pairs.is_empty() {
        return (Value::Null, Value::Null);
    }
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (k, v) in pairs {
        single.insert(k.clone(), Value::String(v.clone()));
        match multi.get_mut(&k) {
            Some(Value::Array(a)) => a.push(Value::String(v)),
            _ => {
                multi.insert(k, Value::Array(vec![Value::String(v)]));
            }
        }
    }
    (Value::Object(single), Value::Object(multi))
}

/// The query string's parameters, decoded (`+` is a space).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Build the event (all but its body) from the request the filters passed.
pub fn prepare<B>(
    ctx: &RequestCtx<'_>,
    mut parts: Parts,
    body: B,
    function: Option<&Arc<FunctionTarget>>,
) -> Result<Outbound, ErrorCode>
where
    B: ::http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let function = function.ok_or(ErrorCode::IntegrationMisconfigured)?;
    let body_limit = MAX_PAYLOAD.min(usize::try_from(ctx.gw.max_body_bytes).unwrap_or(usize::MAX));
    if super::body_len(&parts.headers).is_some_and(|n| n > body_limit as u64) {
        return Err(ErrorCode::PayloadTooLarge);
    }
    let routed = ctx.routed()?;
    let method = routed.method()?;
    if routed.stage.hide_credentials {
        super::hide_credentials(&mut parts.headers, routed.stage.jwt.is_some());
    }
    let stage = routed.stage.name.as_str();
    let full_path = ctx.path(&parts).to_string();
    let path = match full_path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(stage))
    {
        Some("") | None => "/".to_string(),
        Some(rest) => rest.to_string(),
    };
    let (headers, multi_headers) = single_and_multi(
        parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), text(v)))
            .collect(),
    );
    let (query, multi_query) = single_and_multi(query_pairs(parts.uri.query()));
    let path_params = if routed.params.is_empty() {
        Value::Null
    } else {
        Value::Object(
            routed
                .params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(decode(v))))
                .collect(),
        )
    };
    let now = chrono::Utc::now();
    let user_agent = parts.headers.get(http::header::USER_AGENT).map(text);
    let event = json!({
        "resource": method.resource_path,
        "path": path,
        "httpMethod": parts.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_params,
        "stageVariables": routed.stage.stage_variables.clone(),
        "requestContext": {
            "accountId": routed.api.account_id,
            "apiId": routed.api.api_id,
            "stage": stage,
            "resourcePath": method.resource_path,
            "httpMethod": parts.method.as_str(),
            "path": full_path,
            "protocol": format!("{:?}", parts.version),
            "requestId": text(&ctx.request_id),
            "requestTime": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "requestTimeEpoch": now.timestamp_millis(),
            "identity": {
                "sourceIp": ctx.client_ip.to_string(),
                "userAgent": user_agent,
            },
        },
    });
    let event = match event {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Ok(Outbound::Function(Box::new(FunctionCall {
        function: function.clone(),
        event,
        body: ClientBody::new(body),
        body_limit,
    })))
}

/// Why a reply could not be used.
fn bad(reason: BadReply) -> ErrorCode {
    ErrorCode::FunctionBadReply(reason)
}

/// A header value of the reply: strings, numbers and booleans (as Lambda
/// takes them).
fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The function's JSON reply as the client's response.
fn map_reply(reply: &[u8], client_version: http::Version) -> Result<Response<RespBody>, ErrorCode> {
    let v: Value = serde_json::from_slice(reply).map_err(|_| bad(BadReply::Shape))?;
    let obj = v.as_object().ok_or(bad(BadReply::Shape))?;
    let status = obj
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.as_u16() >= 200)
        .ok_or(bad(BadReply::Shape))?;
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => match obj.get("isBase64Encoded") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Bytes::from(s.clone()),
            Some(Value::Bool(true)) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Bytes::from)
                .map_err(|_| bad(BadReply::Shape))?,
            Some(_) => return Err(bad(BadReply::Shape)),
        },
        Some(_) => return Err(bad(BadReply::Shape)),
    };
    let mut resp = Response::new(Either::Right(Full::new(body)));
    *resp.status_mut() = status;
    *resp.version_mut() = client_version;
    let h = resp.headers_mut();
    let mut add = |k: &str, v: &Value, append: bool| -> Result<(), ErrorCode> {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(BadReply::Shape))?;
        let value = header_text(v)
            .and_then(|t| HeaderValue::from_str(&t).ok())
            .ok_or(bad(BadReply::Shape))?;
        if append {
            h.append(name, value);
        } else {
            h.insert(name, value);
        }
        Ok(())
    };
    match obj.get("multiValueHeaders") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, vs) in m {
                let vs = vs.as_array().ok_or(bad(BadReply::Shape))?;
                for v in vs {
                    add(k, v, true)?;
                }
            }
        }
        Some(_) => return Err(bad(BadReply::Shape)),
    }
    // `headers` wins over `multiValueHeaders` for a name in both.
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                add(k, v, false)?;
            }
        }
        Some(_) => return Err(bad(BadReply::Shape)),
    }
    // The gateway frames the body itself.
    strip_hop_by_hop(h);
    h.remove(CONTENT_LENGTH);
    h.remove(TRANSFER_ENCODING);
    Ok(resp)
}

/// Read the body, send the event, map the reply.
pub async fn call(
    client: HttpClient,
    upstream_timeout: Duration,
    call: FunctionCall,
    client_version: http::Version,
) -> Result<Response<RespBody>, ErrorCode> {
    let FunctionCall {
        function,
        mut event,
        body,
        body_limit,
    } = call;

    // The whole body, bounded, within the integration timeout.
    let read = tokio::time::timeout(upstream_timeout, Limited::new(body, body_limit).collect());
    let body = match read.await {
        Err(_) => return Err(ErrorCode::RequestTimeout),
        Ok(Err(e)) => {
            return Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::BadRequestBody
                },
            )
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let (body, b64) = if body.is_empty() {
        (Value::Null, false)
    } else {
        match std::str::from_utf8(&body) {
            Ok(s) => (Value::String(s.to_string()), false),
            Err(_) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(&body)),
                true,
            ),
        }
    };
    event.insert("body".into(), body);
    event.insert("isBase64Encoded".into(), Value::Bool(b64));
    let payload =
        Bytes::from(serde_json::to_vec(&event).map_err(|_| ErrorCode::IntegrationMisconfigured)?);

    let mut req = Request::new(LimitedBody::new(
        ClientBody::new(Full::new(payload.clone())),
        payload.len() as u64,
        None,
    ));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = function.target.uri.clone();
    let h = req.headers_mut();
    h.insert(HOST, function.host.clone());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(payload.len()));
    if let Some((k, v)) = &function.auth {
        h.insert(k.clone(), v.clone());
    }

    let timeout = function
        .timeout
        .map_or(upstream_timeout, |t| t.min(upstream_timeout));
    let exchange = async {
        let resp = client
            .send(function.target.key.clone(), req, None)
            .await
            .map_err(|e| {
                tracing::debug!(function = %function.id, error = %e, "function call failed");
                ErrorCode::FunctionError
            })?;
        if !resp.status().is_success() {
            tracing::debug!(function = %function.id, status = %resp.status(), "function endpoint answered an error");
            return Err(ErrorCode::FunctionError);
        }
        match Limited::new(resp.into_body(), MAX_PAYLOAD).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(bad(BadReply::TooLarge))
            }
            Err(_) => Err(ErrorCode::FunctionError),
        }
    };
    let reply = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(ErrorCode::FunctionTimeout),
        Ok(r) => r?,
    };
    map_reply(&reply, client_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Result<Response<RespBody>, ErrorCode> {
        map_reply(v.to_string().as_bytes(), http::Version::HTTP_11)
    }

    #[test]
    fn replies_map_or_are_refused() {
        let r = map(json!({"statusCode": 201, "headers": {"x-a": "1", "x-n": 2},
            "multiValueHeaders": {"set-cookie": ["a=1", "b=2"], "x-a": ["0"]},
            "body": "aGk=", "isBase64Encoded": true}))
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["x-n"], "2");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        let r = map(json!({"statusCode": 204})).unwrap();
        assert_eq!(r.status(), 204);
        for bad_reply in [
            json!({"body": "no status"}),
            json!({"statusCode": "200"}),
            json!({"statusCode": 42}),
            json!({"statusCode": 200, "body": {"x": 1}}),
            json!({"statusCode": 200, "body": "!!", "isBase64Encoded": true}),
            json!({"statusCode": 200, "headers": {"bad name": "v"}}),
            json!({"statusCode": 200, "headers": {"x": "a\nb"}}),
            json!({"statusCode": 200, "multiValueHeaders": {"x": "v"}}),
            json!([1, 2]),
        ] {
            assert_eq!(
                map(bad_reply.clone()).err(),
                Some(ErrorCode::FunctionBadReply(BadReply::Shape)),
                "{bad_reply}"
            );
        }
        assert!(map_reply(b"not json", http::Version::HTTP_11).is_err());
    }

    #[test]
    fn query_strings_are_decoded_and_grouped() {
        let (s, m) = single_and_multi(query_pairs(Some("a=1&a=2&b=x+y%21&c")));
        assert_eq!(s, json!({"a": "2", "b": "x y!", "c": ""}));
        assert_eq!(m, json!({"a": ["1", "2"], "b": ["x y!"], "c": [""]}));
        assert_eq!(
            single_and_multi(query_pairs(None)),
            (Value::Null, Value::Null)
        );
    }
}
