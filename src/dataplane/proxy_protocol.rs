//! PROXY protocol v1/v2 on data-plane listeners configured for it: the
//! header is read (parsed by the `ppp` crate) before HTTP starts (and,
//! with TLS, before its handshake: on the raw transport), and its source
//! address stands for the socket peer. Any transport that can be peeked
//! ([`Peek`]: TCP) will do.
//!
//! A v2 header may also name the PrivateLink endpoint the connection came
//! through, the way an AWS Network Load Balancer does: a TLV of type
//! [`PP2_TYPE_ENDPOINT`] (0xEA) whose value is the subtype
//! [`PP2_SUBTYPE_ENDPOINT_ID`] (0x01) followed by the endpoint id in ASCII.
//!
//! May import: net.

use crate::net::Peek;
use ppp::{HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest header accepted (v1 is at most 107 bytes; v2 with TLVs can be
/// longer, but nothing we use needs more).
const MAX_HEADER: usize = 1024;

/// TLV type of the PrivateLink information (AWS: `PP2_TYPE_AWS`).
pub const PP2_TYPE_ENDPOINT: u8 = 0xEA;
/// Its subtype carrying the endpoint id (AWS: `PP2_SUBTYPE_AWS_VPCE_ID`).
pub const PP2_SUBTYPE_ENDPOINT_ID: u8 = 0x01;
/// Longest endpoint id believed (longer: treated as absent).
const MAX_ENDPOINT_ID: usize = 128;

/// What a PROXY header tells about the connection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProxyInfo {
    /// The client; `None` for `UNKNOWN`/`LOCAL` (keep the socket peer).
    pub source: Option<SocketAddr>,
    /// The PrivateLink endpoint id of the 0xEA TLV (v2 only), when it is
    /// there and printable ASCII.
    pub endpoint_id: Option<Box<str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("PROXY header missing or invalid")]
    Invalid,
    #[error("PROXY header not received in time")]
    Timeout,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Read the PROXY header from the start of `stream`, leaving the HTTP
/// bytes after it unread.
pub async fn read_header<S: Peek + AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxyInfo, ProxyError> {
    tokio::time::timeout(timeout, read_inner(stream))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read_inner<S: Peek + AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyInfo, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Invalid);
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() {
            if n == MAX_HEADER {
                return Err(ProxyError::Invalid);
            }
            // Part of the header is here; wait for the rest.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let (len, info) = source_of(parsed)?;
        let mut consumed = vec![0u8; len];
        stream.read_exact(&mut consumed).await?;
        return Ok(info);
    }
}

/// The endpoint id of a 0xEA TLV's value: subtype 0x01, then printable
/// ASCII; anything else is no endpoint id.
fn endpoint_id_of(value: &[u8]) -> Option<Box<str>> {
    let (&subtype, id) = value.split_first()?;
    if subtype != PP2_SUBTYPE_ENDPOINT_ID
        || id.is_empty()
        || id.len() > MAX_ENDPOINT_ID
        || !id.iter().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    std::str::from_utf8(id).ok().map(Box::from)
}

/// (header length, what it tells) of a complete header.
fn source_of(parsed: HeaderResult<'_>) -> Result<(usize, ProxyInfo), ProxyError> {
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let addr = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Ok((
                h.header.len(),
                ProxyInfo {
                    source: addr,
                    endpoint_id: None,
                },
            ))
        }
        HeaderResult::V2(Ok(h)) => {
            let addr = match h.addresses {
                ppp::v2::Addresses::IPv4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v2::Addresses::IPv6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                _ => None,
            };
            // A malformed TLV list is a malformed header.
            let mut endpoint_id = None;
            for tlv in h.tlvs() {
                let tlv = tlv.map_err(|_| ProxyError::Invalid)?;
                if tlv.kind == PP2_TYPE_ENDPOINT && endpoint_id.is_none() {
                    endpoint_id = endpoint_id_of(&tlv.value);
                }
            }
            Ok((
                h.len(),
                ProxyInfo {
                    source: addr,
                    endpoint_id,
                },
            ))
        }
        _ => Err(ProxyError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    async fn roundtrip(header: &[u8]) -> (Result<ProxyInfo, String>, Vec<u8>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let header = header.to_vec();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // Split the header to exercise the partial path.
            let mid = header.len() / 2;
            c.write_all(&header[..mid]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(&header[mid..]).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            c
        });
        let (mut s, _) = l.accept().await.unwrap();
        let r = read_header(&mut s, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string());
        let _c = client.await.unwrap();
        let mut rest = vec![0u8; 16];
        s.read_exact(&mut rest).await.unwrap();
        (r, rest)
    }

    #[tokio::test]
    async fn v1_header_then_http() {
        let (r, rest) = roundtrip(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n").await;
        assert_eq!(
            r.unwrap().source,
            Some("203.0.113.7:51000".parse().unwrap())
        );
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn v2_header_then_http() {
        let h = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:4000".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let (r, rest) = roundtrip(&h).await;
        let r = r.unwrap();
        assert_eq!(r.source, Some("198.51.100.9:4000".parse().unwrap()));
        assert_eq!(r.endpoint_id, None);
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    fn v2_with_tlv(value: &[u8]) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:4000".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(0x04, b"noop")
        .unwrap()
        .write_tlv(PP2_TYPE_ENDPOINT, value)
        .unwrap()
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn v2_endpoint_tlv_names_the_endpoint() {
        let (r, rest) = roundtrip(&v2_with_tlv(b"\x01vpce-0123abc")).await;
        let r = r.unwrap();
        assert_eq!(r.source, Some("198.51.100.9:4000".parse().unwrap()));
        assert_eq!(r.endpoint_id.as_deref(), Some("vpce-0123abc"));
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn v2_endpoint_tlv_with_other_subtype_or_bytes_is_ignored() {
        for value in [
            &b"\x02vpce-1"[..],
            b"\x01",
            b"\x01bad id",
            b"\x01\xff\xfe",
            b"",
        ] {
            let (r, _) = roundtrip(&v2_with_tlv(value)).await;
            assert_eq!(r.unwrap().endpoint_id, None, "{value:?}");
        }
    }

    #[tokio::test]
    async fn garbage_is_rejected() {
        let (r, _) = roundtrip(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.is_err());
    }
}
