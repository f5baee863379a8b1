//! PrivateLink integration (issue [7], item 4): the request goes to the
//! endpoint's service — a PRIVATE API served on this gateway's private
//! listener — over a connection of its own that starts with a PROXY v2
//! header whose 0xEA TLV (subtype 0x01) names the endpoint, so the
//! private listener knows which endpoint it came through. The Host and
//! path are the method's `endpoint_url`'s. Whether the endpoint is
//! Active is compiled into the snapshot (`target` is None otherwise:
//! 503 `PrivateLinkUnavailable`), so a status change applies from the
//! next request.
//!
//! An external service (`[[privatelink_services]]`) is reached at its
//! `target`, plain (no PROXY header).
//!
//! One connection per request (not pooled): the HTTP integration's pool
//! is keyed by URL authority and knows nothing of PROXY headers.

use super::http::body::BodyState;
use super::http::pool::{PooledBody, UpstreamBody};
use crate::dataplane::error::{BadGateway, ErrorCode};
use crate::dataplane::RespBody;
use crate::snapshot::{PrivateLinkConnect, PrivateLinkTarget};
use http::{Request, Response};
use http_body_util::Either;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A prepared PrivateLink request.
pub struct PrivateLinkCall {
    pub target: Arc<PrivateLinkTarget>,
    pub req: Request<UpstreamBody>,
    pub body: Option<Arc<BodyState>>,
}

/// The PROXY v2 header (PROXY command, TCP) from `src` to `dst`, with the
/// PrivateLink TLV: type 0xEA, subtype 0x01, then the endpoint id.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr, endpoint_id: &str) -> Vec<u8> {
    let mut rest = Vec::with_capacity(40 + endpoint_id.len());
    let family = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            rest.extend_from_slice(&s.ip().octets());
            rest.extend_from_slice(&d.ip().octets());
            rest.extend_from_slice(&s.port().to_be_bytes());
            rest.extend_from_slice(&d.port().to_be_bytes());
            0x11
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(x) => x.ip().to_ipv6_mapped(),
                SocketAddr::V6(x) => *x.ip(),
            };
            rest.extend_from_slice(&v6(s).octets());
            rest.extend_from_slice(&v6(d).octets());
            rest.extend_from_slice(&s.port().to_be_bytes());
            rest.extend_from_slice(&d.port().to_be_bytes());
            0x21
        }
    };
    // The id is at most 64 bytes (checked by the management API); the
    // TLV length field is 16 bits anyway.
    let id = &endpoint_id.as_bytes()[..endpoint_id.len().min(u16::MAX as usize - 1)];
    rest.push(0xEA);
    rest.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
    rest.push(0x01);
    rest.extend_from_slice(id);
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(family);
    h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    h.extend_from_slice(&rest);
    h
}

/// Connect, send the PROXY header, exchange the request; the response
/// head within `timeout`.
pub async fn call(
    timeout: Duration,
    idle: Duration,
    call: PrivateLinkCall,
    client_version: http::Version,
) -> Result<Response<RespBody>, ErrorCode> {
    let PrivateLinkCall { target, req, body } = call;
    let exchange = async move {
        let unreachable = |_| ErrorCode::BadGateway(BadGateway::Unreachable);
        let tcp = match &target.connect {
            PrivateLinkConnect::Listener(addr) => {
                let mut tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(unreachable)?;
                let (src, dst) = (
                    tcp.local_addr().map_err(unreachable)?,
                    tcp.peer_addr().map_err(unreachable)?,
                );
                tcp.write_all(&proxy_v2_header(src, dst, &target.endpoint_id))
                    .await
                    .map_err(unreachable)?;
                tcp
            }
            PrivateLinkConnect::External(hostport) => {
                tokio::net::TcpStream::connect(hostport.as_str())
                    .await
                    .map_err(unreachable)?
            }
        };
        let _ = tcp.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|_| ErrorCode::BadGateway(BadGateway::Unreachable))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "privatelink connection ended");
            }
        });
        tx.send_request(req).await.map_err(|e| {
            if let Some(s) = &body {
                if s.exceeded() {
                    return ErrorCode::PayloadTooLarge;
                }
                if s.client_error() {
                    return ErrorCode::BadRequestBody;
                }
            }
            tracing::debug!(error = %e, "privatelink request failed");
            ErrorCode::BadGateway(BadGateway::NoAnswer)
        })
    };
    let resp = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(ErrorCode::GatewayTimeout),
        Ok(r) => r?,
    };
    let (mut parts, inner) = resp.into_parts();
    super::http::strip_hop_by_hop(&mut parts.headers);
    parts.version = client_version;
    Ok(Response::from_parts(
        parts,
        Either::Left(PooledBody::unpooled(inner, idle)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_the_endpoint_tlv() {
        let h = proxy_v2_header(
            "10.1.2.3:40000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
            "ep1",
        );
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]) as usize, h.len() - 16);
        assert_eq!(&h[28..], &[0xEA, 0, 4, 0x01, b'e', b'p', b'1']);
    }
}
