//! PROXY protocol v1/v2 on data-plane listeners configured for it: the
//! header is read (parsed by the `ppp` crate) before HTTP starts (and,
//! with TLS, before its handshake: on the raw transport), and its source
//! address stands for the socket peer. Any transport that can be peeked
//! ([`Peek`]: TCP) will do.
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
/// bytes after it unread. `Ok(None)` for `UNKNOWN`/`LOCAL` (keep the peer).
pub async fn read_header<S: Peek + AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(timeout, read_inner(stream))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read_inner<S: Peek + AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyError> {
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
        let (len, addr) = source_of(parsed)?;
        let mut consumed = vec![0u8; len];
        stream.read_exact(&mut consumed).await?;
        return Ok(addr);
    }
}

/// (header length, source address) of a complete header.
fn source_of(parsed: HeaderResult<'_>) -> Result<(usize, Option<SocketAddr>), ProxyError> {
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
            Ok((h.header.len(), addr))
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
            Ok((h.len(), addr))
        }
        _ => Err(ProxyError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    async fn roundtrip(header: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
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
        assert_eq!(r.unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
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
        assert_eq!(r.unwrap(), Some("198.51.100.9:4000".parse().unwrap()));
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn garbage_is_rejected() {
        let (r, _) = roundtrip(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.is_err());
    }
}
