//! `x-request-id`: kept from the client when it sent a sane one, else made
//! here (per-process random prefix + per-thread counter, no shared lock).

use super::{ResponseCtx, ResponseFilter};
use crate::dataplane::RespBody;
use http::{HeaderMap, HeaderValue, Response};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

static PREFIX: OnceLock<u32> = OnceLock::new();
static THREADS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static NEXT: Cell<u64> = Cell::new(THREADS.fetch_add(1, Ordering::Relaxed) << 40);
}

pub struct RequestId;

impl ResponseFilter for RequestId {
    /// The request's id on its answer (moved from the context, not copied:
    /// read it from the response from here on).
    fn response_filter(ctx: &mut ResponseCtx, resp: &mut Response<RespBody>) {
        if let Some(id) = ctx.request_id.take() {
            if ctx.logged.wants_request_id {
                ctx.logged.request_id = Some(id.clone());
            }
            resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
    }
}

/// The client's id is copied, not shared: a clone would keep the
/// connection's read buffer from being reused while the answer is
/// awaited (hyper #4060).
pub fn take_or_make(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        if !v.is_empty() && v.len() <= 200 {
            if let Ok(copy) = HeaderValue::from_bytes(v.as_bytes()) {
                return copy;
            }
        }
    }
    make()
}

fn make() -> HeaderValue {
    let prefix = *PREFIX.get_or_init(|| (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u32);
    let n = NEXT.with(|c| {
        let v = c.get();
        c.set(v.wrapping_add(1));
        v
    });
    let mut buf = [0u8; 24];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf[..8].iter_mut().enumerate() {
        *b = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    for (i, b) in buf[8..].iter_mut().enumerate() {
        *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_and_keep_client_value() {
        let a = super::make();
        let b = super::make();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", http::HeaderValue::from_static("abc"));
        assert_eq!(super::take_or_make(&h), "abc");
    }
}
