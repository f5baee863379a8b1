//! Client address: the socket peer (or the PROXY protocol source), unless
//! that is a trusted proxy; then the rightmost X-Forwarded-For hop that is
//! not itself a trusted proxy.

use super::{ErrorCode, Flow, RequestCtx, RequestFilter};
use http::request::Parts;
use ipnet::IpNet;
use std::net::IpAddr;

pub struct ClientIp;

impl RequestFilter for ClientIp {
    fn request_filter(ctx: &mut RequestCtx<'_>, req: &Parts) -> Result<Flow, ErrorCode> {
        ctx.client_ip = resolve(ctx.peer.addr.ip(), &req.headers, &ctx.gw.trusted_proxies);
        Ok(Flow::Continue)
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

pub fn resolve(peer: IpAddr, headers: &http::HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if proxies.is_empty() || !trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    // Walk every X-Forwarded-For value right to left.
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for value in values.iter().rev() {
        for hop in value.rsplit(',') {
            let hop = hop.trim();
            let Ok(ip) = hop
                .parse::<IpAddr>()
                .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip()))
            else {
                // An unparsable hop: stop at the last address we trust.
                return client;
            };
            client = ip;
            if !trusted(ip, proxies) {
                return ip;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    fn h(v: &str) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        m.insert("x-forwarded-for", v.parse().unwrap());
        m
    }
    #[test]
    fn rightmost_untrusted_hop() {
        let p: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            resolve(peer, &h("1.2.3.4, 5.6.7.8, 10.0.0.2"), &p),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's XFF is ignored.
        let outsider: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(resolve(outsider, &h("1.2.3.4"), &p), outsider);
        // No header: the proxy itself.
        assert_eq!(resolve(peer, &http::HeaderMap::new(), &p), peer);
        // Garbage stops the walk.
        assert_eq!(resolve(peer, &h("1.2.3.4, junk"), &p), peer);
        assert_eq!(
            resolve(peer, &h("10.1.1.1"), &p),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
    }
}
