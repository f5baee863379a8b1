//! W3C Trace Context (`traceparent`, version 00): a valid one from the
//! client is continued, else a new trace starts; the integration gets the
//! same trace id with the gateway's own span id as its parent.
//!
//! With OTLP export on (`telemetry::otlp`), a new trace is sampled by
//! [`Sampler`] (a share of trace ids), a continued one as its
//! `traceparent`'s sampled flag says (parent-based); the flags the
//! integration gets say the same. With export off, a new trace is always
//! flagged sampled (the backend decides for itself).

use http::HeaderValue;

pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// A request's trace: its trace id and the gateway's span id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: u128,
    /// The gateway's span: the parent id the integration sees.
    pub span_id: u64,
    /// The client's span (the parent id of its `traceparent`); 0 when the
    /// trace started here.
    pub parent_id: u64,
    /// Flags (bit 0: sampled), as the client sent them (new: the
    /// sampler's decision).
    pub flags: u8,
}

/// Which new traces are sampled: those whose trace id's low 64 bits are
/// below `ratio` × 2^64 (the same decision on every node for a trace id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampler(u64);

impl Sampler {
    /// `ratio` in 0..=1 (1: every trace, 0: none).
    pub fn new(ratio: f64) -> Sampler {
        // `as` saturates: 1.0 × 2^64 is u64::MAX.
        Sampler((ratio.clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u64)
    }

    pub fn samples(&self, trace_id: u128) -> bool {
        self.0 == u64::MAX || (trace_id as u64) < self.0
    }
}

fn hex_u128(s: &[u8]) -> Option<u128> {
    if s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u128::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
    } else {
        None
    }
}

impl Trace {
    /// Continue the client's trace if its `traceparent` is valid, else
    /// start one (sampled as `sampler` says; always without one).
    pub fn from_headers(headers: &http::HeaderMap, sampler: Option<Sampler>) -> Trace {
        let span_id = nonzero_u64();
        match headers.get(&TRACEPARENT).and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, parent_id, flags)) => Trace {
                trace_id,
                span_id,
                parent_id,
                flags,
            },
            None => {
                let trace_id = loop {
                    let t = rand::random::<u128>();
                    if t != 0 {
                        break t;
                    }
                };
                let sampled = sampler.is_none_or(|s| s.samples(trace_id));
                Trace {
                    trace_id,
                    span_id,
                    parent_id: 0,
                    flags: sampled as u8,
                }
            }
        }
    }

    /// The sampled flag.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `traceparent` the integration gets (written into a stack
    /// buffer: `format!` cost about 650 instructions per request).
    pub fn header(&self) -> HeaderValue {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut buf[3..35], self.trace_id);
        hex_into(&mut buf[36..52], self.span_id as u128);
        hex_into(&mut buf[53..55], self.flags as u128);
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// `v`'s low `out.len() * 4` bits as lowercase hex, most significant
/// digit first.
pub(crate) fn hex_into(out: &mut [u8], mut v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v = rand::random::<u64>();
        if v != 0 {
            return v;
        }
    }
}

/// `00-{32 hex trace id, not all zero}-{16 hex parent id, not all
/// zero}-{2 hex flags}`: (trace id, parent id, flags).
pub fn parse(v: &[u8]) -> Option<(u128, u64, u8)> {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace = hex_u128(&v[3..35])?;
    let parent = hex_u128(&v[36..52])?;
    let flags = hex_u128(&v[53..55])? as u8;
    (trace != 0 && parent != 0).then_some((trace, parent as u64, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_rejects_bad() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse(ok),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1))
        );
        assert_eq!(
            parse(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
        assert_eq!(
            parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse(b"garbage"), None);
    }

    #[test]
    fn continued_keeps_trace_id_new_parent() {
        let mut h = http::HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let t = Trace::from_headers(&h, None);
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7);
        let out = t.header();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!out.contains("00f067aa0ba902b7"));
        assert!(parse(out.as_bytes()).is_some());
        let fresh = Trace::from_headers(&http::HeaderMap::new(), None);
        assert!(parse(fresh.header().as_bytes()).is_some());
        assert_eq!(fresh.parent_id, 0);
        assert!(fresh.sampled());
    }

    #[test]
    fn sampler_follows_the_ratio_and_the_parent() {
        assert!(Sampler::new(1.0).samples(u128::MAX));
        assert!(!Sampler::new(0.0).samples(1));
        let half = Sampler::new(0.5);
        assert!(half.samples(0x7fff_ffff_ffff_ffff));
        assert!(!half.samples(0x8000_0000_0000_0000));
        let n = (0..4000)
            .filter(|_| Trace::from_headers(&http::HeaderMap::new(), Some(half)).sampled())
            .count();
        assert!((1600..2400).contains(&n), "{n} of 4000 sampled at 0.5");
        let none = Trace::from_headers(&http::HeaderMap::new(), Some(Sampler::new(0.0)));
        assert!(!none.sampled());
        assert!(none.header().to_str().unwrap().ends_with("-00"));
        // A client's decision stands, whatever the ratio.
        let mut h = http::HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(Trace::from_headers(&h, Some(Sampler::new(0.0))).sampled());
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        assert!(!Trace::from_headers(&h, Some(Sampler::new(1.0))).sampled());
    }

    #[test]
    fn header_is_the_w3c_form() {
        let t = Trace {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_id: 0,
            flags: 1,
        };
        assert_eq!(
            t.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let small = Trace {
            trace_id: 0xabc,
            span_id: 0x1,
            parent_id: 0,
            flags: 0,
        };
        assert_eq!(
            small.header(),
            "00-00000000000000000000000000000abc-0000000000000001-00"
        );
    }
}
