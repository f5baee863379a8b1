//! JWT auths: minting the gateway's own tokens (management API, Create Auth)
//! and checking `Authorization: Bearer <token>` on the data plane.
//!
//! Everything a stage needs is compiled once per snapshot into a
//! [`StageJwt`]: the HS256 secrets of the auths connected to the stage and
//! the parsed JWKS of external issuers. A new snapshot builds a new
//! `StageJwt` (with an empty cache), so deleting an auth or disconnecting a
//! stage revokes its tokens on the next request.
//!
//! Decisions:
//! - Gateway tokens: `iss` = `apigw`, `kid` = auth id, HS256 only, `exp`
//!   required, `aud` must name the stage's API, **no leeway** (the gateway
//!   is both minter and checker, so there is no clock skew to absorb). A
//!   token is also refused once its auth's own expiry has passed.
//! - External tokens: chosen by `iss`, key by `kid` (no kid and a single key:
//!   that key); the algorithm is fixed by the key (RSA → RS256, EC P-256 →
//!   ES256, OKP Ed25519 → EdDSA), so HS*/none can never verify (no algorithm
//!   confusion). `exp` required, `nbf` honoured, both with 60 s leeway; `aud`
//!   checked when the auth names an audience.
//! - Time: valid while `now < exp` (RFC 7519) and `now >= nbf`. A token not
//!   yet valid is reported as `Expired` ("expired or not yet valid").
//! - Errors: no key source for the token (unknown `iss`, a `kid` of an auth
//!   not connected to this stage) or a wrong `aud` → `NotForStage`; a known
//!   key that does not verify, or a disallowed `alg` → `BadSignature`.
//! - JWKS keys with `"use": "enc"` are skipped (IdPs such as Keycloak publish
//!   encryption keys next to signing keys); any other key that is not
//!   RS256/ES256/EdDSA is rejected, naming it.
//! - Cache: verified tokens only, keyed by the token, value = the instant
//!   (unix s) from which it is no longer valid. Bounded to
//!   [`CACHE_MAX_ENTRIES`] entries and [`CACHE_MAX_BYTES`] of keys; when
//!   full, expired entries are swept (at most once a second), and if it is
//!   still full the new token is simply not cached.
//!
//! Pure logic: imports nothing of the gateway (no I/O, no HTTP server
//! types beyond header values); the data plane maps its verdicts to
//! error codes, the management API mints with it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

/// `iss` of tokens minted by the gateway.
pub const GATEWAY_ISSUER: &str = "apigw";
/// Clock-skew allowance for external issuers' `exp` / `nbf`.
pub const EXTERNAL_LEEWAY_SECS: i64 = 60;
/// Longest `Authorization` value considered (longer: `Malformed`).
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;
pub const CACHE_MAX_ENTRIES: usize = 10_000;
pub const CACHE_MAX_BYTES: usize = 8 << 20;
const MAX_JWKS_KEYS: usize = 100;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotForStage,
    Internal,
}

/// (The data plane answers each with its own code: see
/// `dataplane::filters::jwt`.)
impl JwtError {
    pub fn message(self) -> &'static str {
        match self {
            JwtError::Missing => "Missing Authorization header with a Bearer token",
            JwtError::Malformed => "Malformed Authorization header or bearer token",
            JwtError::BadSignature => "Token signature is not valid",
            JwtError::Expired => "Token is expired or not yet valid",
            JwtError::NotForStage => "Token is not valid for this stage",
            JwtError::Internal => "Token could not be processed",
        }
    }
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for JwtError {}

/// 32 random bytes (CSPRNG) used as an auth's HS256 secret.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

#[derive(Serialize)]
struct MintClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

/// The access token returned once by Create Auth: HS256, header `kid` =
/// auth_id, claims { iss: "apigw", sub: auth_id, aud: api_id, iat, exp, jti }.
pub fn mint(
    secret: &[u8],
    auth_id: &str,
    api_id: &str,
    expires_at_unix: i64,
) -> Result<String, JwtError> {
    if secret.is_empty() || auth_id.is_empty() || api_id.is_empty() {
        return Err(JwtError::Internal);
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(auth_id.to_string());
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let claims = MintClaims {
        iss: GATEWAY_ISSUER,
        sub: auth_id,
        aud: api_id,
        iat: chrono::Utc::now().timestamp(),
        exp: expires_at_unix,
        jti: B64URL.encode(jti),
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|_| JwtError::Internal)
}

/// The HS256 secret of a gateway auth connected to the stage.
pub struct GatewayKey {
    pub auth_id: String,
    pub secret: Vec<u8>,
    pub expires_at: i64,
}

/// An external identity provider connected to the stage through an auth.
pub struct IssuerKeys {
    pub auth_id: String,
    pub issuer: String,
    pub audience: Option<String>,
    /// A JWKS document `{"keys": [...]}`.
    pub jwks: Value,
}

struct ExtKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Parse a JWKS into its usable signing keys, or say which element is bad.
fn parse_jwks(jwks: &Value) -> Result<Vec<ExtKey>, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("keys: a JWKS is an object with a \"keys\" array")?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(format!("keys: at most {MAX_JWKS_KEYS} keys"));
    }
    let mut out: Vec<ExtKey> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let at = |m: &str| format!("keys[{i}]: {m}");
        let Some(key) = parse_jwk(k).map_err(|m| at(&m))? else {
            continue; // an encryption key
        };
        if key.kid.is_some() && out.iter().any(|k| k.kid == key.kid) {
            return Err(at("duplicate kid"));
        }
        out.push(key);
    }
    if out.is_empty() {
        return Err("keys: no usable signing key (RS256, ES256 or EdDSA)".into());
    }
    Ok(out)
}

/// One JWK (jsonwebtoken's [`Jwk`] type) as a usable signing key; `None`
/// for an encryption key. The algorithm is fixed by the key type: RS256
/// (2048 to 8192 bits), ES256 (P-256) or EdDSA (Ed25519).
fn parse_jwk(k: &Value) -> Result<Option<ExtKey>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters as P, EllipticCurve, Jwk, PublicKeyUse};
    let obj = k.as_object().ok_or("must be an object")?;
    let kty = match obj.get("kty") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("\"kty\" must be a string".into()),
        None => return Err("\"kty\" is required".into()),
    };
    let unsupported = || {
        format!(
            "kty {kty:?} is not supported (RSA for RS256, EC P-256 for ES256, OKP Ed25519 for EdDSA)"
        )
    };
    let jwk: Jwk = serde_json::from_value(k.clone()).map_err(|_| match kty {
        "RSA" => "RSA keys need base64url \"n\" and \"e\" (and a known \"alg\", \"use\")".to_string(),
        "EC" => "EC keys must have crv \"P-256\" (ES256), \"x\" and \"y\" (and a known \"alg\", \"use\")".to_string(),
        "OKP" => "OKP keys must have crv \"Ed25519\" (EdDSA) and \"x\" (and a known \"alg\", \"use\")".to_string(),
        _ => unsupported(),
    })?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Encryption) => return Ok(None),
        Some(PublicKeyUse::Other(u)) => return Err(format!("\"use\" {u:?} is not \"sig\"")),
    }
    let bytes = |name: &str, v: &str| -> Result<Vec<u8>, String> {
        B64URL
            .decode(v)
            .map_err(|_| format!("\"{name}\" is not base64url"))
    };
    let (want_alg, alg) = match &jwk.algorithm {
        P::RSA(_) => ("RS256", Algorithm::RS256),
        P::EllipticCurve(_) => ("ES256", Algorithm::ES256),
        P::OctetKeyPair(_) => ("EdDSA", Algorithm::EdDSA),
        P::OctetKey(_) => return Err(unsupported()),
    };
    if let Some(a) = &jwk.common.key_algorithm {
        if a.to_string() != want_alg {
            return Err(format!(
                "alg {:?} is not supported for kty {kty} (only {want_alg})",
                a.to_string()
            ));
        }
    }
    let key = match &jwk.algorithm {
        P::RSA(r) => {
            let (n, e) = (bytes("n", &r.n)?, bytes("e", &r.e)?);
            // Leading zero octets are not allowed by RFC 7518 but seen in the wild.
            let n = &n[n.iter().take_while(|b| **b == 0).count()..];
            let e = &e[e.iter().take_while(|b| **b == 0).count()..];
            if !(2048..=8192).contains(&(n.len() * 8)) {
                return Err("RSA modulus \"n\" must be 2048 to 8192 bits".into());
            }
            if e.is_empty() || e.len() > 4 {
                return Err("RSA exponent \"e\" is not valid".into());
            }
            DecodingKey::from_rsa_raw_components(n, e)
        }
        P::EllipticCurve(ec) => {
            if ec.curve != EllipticCurve::P256 {
                return Err("EC keys must have crv \"P-256\" (ES256)".into());
            }
            if bytes("x", &ec.x)?.len() != 32 || bytes("y", &ec.y)?.len() != 32 {
                return Err("EC \"x\" and \"y\" must be 32 bytes".into());
            }
            DecodingKey::from_jwk(&jwk).map_err(|_| "EC key is not valid".to_string())?
        }
        P::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err("OKP keys must have crv \"Ed25519\" (EdDSA)".into());
            }
            if bytes("x", &okp.x)?.len() != 32 {
                return Err("Ed25519 \"x\" must be 32 bytes".into());
            }
            DecodingKey::from_jwk(&jwk).map_err(|_| "OKP key is not valid".to_string())?
        }
        P::OctetKey(_) => return Err(unsupported()),
    };
    Ok(Some(ExtKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    }))
}

/// Validate a JWKS document at auth create/set time; the message names the
/// bad element (`keys[2]: ...`).
pub fn validate_jwks(jwks: &Value) -> Result<(), String> {
    parse_jwks(jwks).map(|_| ())
}

/// Which auth of the stage accepted a token: an index into
/// [`StageJwt`]'s auth ids (so the cache holds a `u32`, not a string).
type AuthIx = u32;

struct GwKey {
    key: DecodingKey,
    expires_at: i64,
    auth: AuthIx,
}

struct Issuer {
    issuer: String,
    audience: Option<String>,
    keys: Vec<ExtKey>,
    auth: AuthIx,
}

impl Issuer {
    fn key_for(&self, kid: Option<&str>) -> Option<&ExtKey> {
        let found = kid.and_then(|kid| self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)));
        // No kid (or an unknown kid) and a single key without a kid: that key.
        found.or_else(|| match self.keys.as_slice() {
            [only] if kid.is_none() || only.kid.is_none() => Some(only),
            _ => None,
        })
    }
}

/// A cached verdict: the first instant (unix s) at which the token is no
/// longer valid, and the auth that accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verified {
    deadline: i64,
    auth: AuthIx,
}

/// The bounded cache of verified tokens: token → [`Verified`].
struct TokenCache {
    // ahash (keyed per process): tokens are long and come from clients.
    map: DashMap<Box<[u8]>, Verified, ahash::RandomState>,
    entries: AtomicUsize,
    bytes: AtomicUsize,
    last_sweep: AtomicI64,
    max_entries: usize,
    max_bytes: usize,
}

impl TokenCache {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        TokenCache {
            map: DashMap::with_hasher(ahash::RandomState::new()),
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            last_sweep: AtomicI64::new(i64::MIN),
            max_entries,
            max_bytes,
        }
    }

    /// No allocation: hashes the token and copies the verdict out.
    #[inline]
    fn get(&self, token: &[u8]) -> Option<Verified> {
        self.map.get(token).map(|d| *d)
    }

    fn remove_expired(&self, token: &[u8], now: i64) {
        if let Some((k, _)) = self.map.remove_if(token, |_, d| now >= d.deadline) {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(k.len(), Ordering::Relaxed);
        }
    }

    fn full(&self, extra: usize) -> bool {
        self.entries.load(Ordering::Relaxed) >= self.max_entries
            || self.bytes.load(Ordering::Relaxed) + extra > self.max_bytes
    }

    /// Concurrent inserts may overshoot the bounds by a few entries at most.
    fn insert(&self, token: &[u8], verified: Verified, now: i64) {
        if self.full(token.len()) {
            self.sweep(now);
            if self.full(token.len()) {
                return;
            }
        }
        if let Entry::Vacant(v) = self.map.entry(token.into()) {
            v.insert(verified);
            self.entries.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(token.len(), Ordering::Relaxed);
        }
    }

    /// Drop expired entries, at most once per second of `now`.
    fn sweep(&self, now: i64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if last >= now
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.map.retain(|k, d| {
            let keep = now < d.deadline;
            if !keep {
                self.entries.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(k.len(), Ordering::Relaxed);
            }
            keep
        });
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Aud>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
}

impl Claims {
    fn has_aud(&self, want: &str) -> bool {
        match &self.aud {
            Some(Aud::One(a)) => a == want,
            Some(Aud::Many(v)) => v.iter().any(|a| a == want),
            None => false,
        }
    }

    /// Time checks: returns the instant from which the token is invalid.
    fn check_time(&self, now: i64, leeway: i64) -> Result<i64, JwtError> {
        let exp = self
            .exp
            .as_ref()
            .map(numeric_date)
            .ok_or(JwtError::Malformed)?;
        let deadline = exp.saturating_add(leeway);
        if now >= deadline {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = self.nbf.as_ref().map(numeric_date) {
            if now < nbf.saturating_sub(leeway) {
                return Err(JwtError::Expired);
            }
        }
        Ok(deadline)
    }
}

/// A NumericDate (seconds, possibly fractional) floored to whole seconds.
fn numeric_date(n: &serde_json::Number) -> i64 {
    n.as_i64()
        .unwrap_or_else(|| n.as_f64().map(|f| f.floor() as i64).unwrap_or(i64::MAX))
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtError> {
    let raw = B64URL.decode(part).map_err(|_| JwtError::Malformed)?;
    if raw.trim_ascii_start().first() != Some(&b'{') {
        return Err(JwtError::Malformed);
    }
    serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)
}

fn check_sig(sig: &str, message: &str, key: &DecodingKey, alg: Algorithm) -> Result<(), JwtError> {
    match jsonwebtoken::crypto::verify(sig, message.as_bytes(), key, alg) {
        Ok(true) => Ok(()),
        _ => Err(JwtError::BadSignature),
    }
}

/// The token of an `Authorization: Bearer <token>` value.
/// The token of a `Bearer` credential, as bytes: the cache is looked up
/// with them, and only a token not cached is checked for UTF-8.
fn bearer_token(v: Option<&[u8]>) -> Result<&[u8], JwtError> {
    let b = v.ok_or(JwtError::Missing)?;
    if b.len() > MAX_AUTHORIZATION_LEN {
        return Err(JwtError::Malformed);
    }
    let b = b.trim_ascii();
    if b.len() < 8 || !b[..6].eq_ignore_ascii_case(b"bearer") || b[6] != b' ' {
        return Err(JwtError::Malformed);
    }
    Ok(b[7..].trim_ascii_start())
}

/// Everything one stage needs to check tokens, plus its verified-token cache.
pub struct StageJwt {
    api_id: String,
    gateway: HashMap<Box<str>, GwKey>,
    issuers: Vec<Issuer>,
    /// The ids of the stage's auths, indexed by [`AuthIx`]: what
    /// [`StageJwt::verify_auth`] hands out (a reference count, never a
    /// copy, and never anything of the token).
    auths: Vec<Arc<str>>,
    cache: TokenCache,
}

impl std::fmt::Debug for StageJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageJwt")
            .field("api_id", &self.api_id)
            .field("gateway_auths", &self.gateway.len())
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .field("cached", &self.cache.entries.load(Ordering::Relaxed))
            .finish()
    }
}

impl StageJwt {
    /// Compile the keys of the auths connected to one stage. `api_id`:
    /// gateway tokens must have `aud` == api_id.
    pub fn compile(
        api_id: &str,
        gateway: Vec<GatewayKey>,
        external: Vec<IssuerKeys>,
    ) -> Result<StageJwt, String> {
        let mut gw = HashMap::with_capacity(gateway.len());
        let mut auths: Vec<Arc<str>> = Vec::with_capacity(gateway.len() + external.len());
        let mut auth_ix = |id: &str| -> Result<AuthIx, String> {
            let ix = AuthIx::try_from(auths.len()).map_err(|_| "too many auths".to_string())?;
            auths.push(Arc::from(id));
            Ok(ix)
        };
        for g in gateway {
            if g.secret.is_empty() {
                return Err(format!("auth {}: empty secret", g.auth_id));
            }
            let key = GwKey {
                key: DecodingKey::from_secret(&g.secret),
                expires_at: g.expires_at,
                auth: auth_ix(&g.auth_id)?,
            };
            gw.insert(g.auth_id.into_boxed_str(), key);
        }
        let mut issuers = Vec::with_capacity(external.len());
        for x in external {
            if x.issuer.is_empty() {
                return Err(format!("auth {}: empty issuer", x.auth_id));
            }
            let keys = parse_jwks(&x.jwks).map_err(|e| format!("auth {}: jwks {e}", x.auth_id))?;
            issuers.push(Issuer {
                issuer: x.issuer,
                audience: x.audience.filter(|a| !a.is_empty()),
                keys,
                auth: auth_ix(&x.auth_id)?,
            });
        }
        Ok(StageJwt {
            api_id: api_id.to_string(),
            gateway: gw,
            issuers,
            auths,
            cache: TokenCache::new(CACHE_MAX_ENTRIES, CACHE_MAX_BYTES),
        })
    }

    /// Check an `Authorization` header value (`Bearer <token>`, its bytes
    /// as received); `now` is unix seconds. A cached token costs a hash
    /// lookup and no signature check.
    pub fn verify(&self, authorization: Option<&[u8]>, now: i64) -> Result<(), JwtError> {
        self.verify_auth(authorization, now).map(|_| ())
    }

    /// [`StageJwt::verify`], answering with the id of the auth that
    /// accepted the token (for the access log). Allocates nothing: the id
    /// was made when the stage was compiled; a cached token keeps the
    /// auth's index.
    pub fn verify_auth(
        &self,
        authorization: Option<&[u8]>,
        now: i64,
    ) -> Result<&Arc<str>, JwtError> {
        let token = bearer_token(authorization)?;
        let verified = match self.cache.get(token) {
            Some(v) if now < v.deadline => v,
            Some(_) => {
                self.cache.remove_expired(token, now);
                return Err(JwtError::Expired);
            }
            None => {
                let text = std::str::from_utf8(token).map_err(|_| JwtError::Malformed)?;
                let v = self.verify_uncached(text, now)?;
                self.cache.insert(token, v, now);
                v
            }
        };
        self.auths
            .get(verified.auth as usize)
            .ok_or(JwtError::Internal)
    }

    /// Full check; returns the instant from which the token is invalid
    /// and the auth that accepted it.
    fn verify_uncached(&self, token: &str, now: i64) -> Result<Verified, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: JoseHeader = decode_json(h)?;
        let claims: Claims = decode_json(p)?;
        if header.crit.is_some() || B64URL.decode(sig).is_err() {
            return Err(JwtError::Malformed);
        }
        if sig.is_empty() {
            return Err(JwtError::BadSignature); // `alg: none`: never acceptable
        }
        let message = &token[..h.len() + 1 + p.len()];

        // Gateway tokens: iss "apigw" and the kid of an auth of this stage.
        if claims.iss.as_deref() == Some(GATEWAY_ISSUER) {
            if let Some(g) = header.kid.as_deref().and_then(|k| self.gateway.get(k)) {
                if header.alg != "HS256" {
                    return Err(JwtError::BadSignature);
                }
                check_sig(sig, message, &g.key, Algorithm::HS256)?;
                if !claims.has_aud(&self.api_id) {
                    return Err(JwtError::NotForStage);
                }
                let deadline = claims.check_time(now, 0)?.min(g.expires_at);
                return if now < deadline {
                    Ok(Verified {
                        deadline,
                        auth: g.auth,
                    })
                } else {
                    Err(JwtError::Expired)
                };
            }
        }

        // External issuers: by iss (several auths may name the same issuer).
        let mut err: Option<JwtError> = None;
        for iss in self
            .issuers
            .iter()
            .filter(|i| claims.iss.as_deref() == Some(i.issuer.as_str()))
        {
            let r = match iss.key_for(header.kid.as_deref()) {
                None => Err(JwtError::BadSignature),
                Some(k) if external_alg(&header.alg) != Some(k.alg) => Err(JwtError::BadSignature),
                Some(k) => {
                    check_sig(sig, message, &k.key, k.alg).and_then(|()| match &iss.audience {
                        Some(a) if !claims.has_aud(a) => Err(JwtError::NotForStage),
                        _ => claims.check_time(now, EXTERNAL_LEEWAY_SECS),
                    })
                }
            };
            match r {
                Ok(deadline) => {
                    return Ok(Verified {
                        deadline,
                        auth: iss.auth,
                    })
                }
                // Prefer the error of an entry whose signature verified.
                Err(e) if err.is_none() || err == Some(JwtError::BadSignature) => err = Some(e),
                Err(_) => {}
            }
        }
        Err(err.unwrap_or(JwtError::NotForStage))
    }
}

/// The algorithms external keys may use (never HS* or none).
fn external_alg(s: &str) -> Option<Algorithm> {
    match s {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    // Test-only keys, generated once with `openssl genpkey`.
    const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDHpYHIbiCImSTo
j7QnUyJuNPwHn02hsrwMKvpG57M9qBPzJzSUfX1bUywug8Mpoyg+nRKZtbrR0lsC
PYz3PORB59oCi47OGMyIGkin76bNiFgyycTjl8fvSlzbLoEgLDzCUobhY5v0O2p6
TLobUuzxXTemSF07i9P40Xb6vwAfnycDZWHrLlasGopFMypW+ffwUtrRYT0l4mht
fQz2cWw1BfQ3wedWag4kAzX13P8d3JR5h8YZ46UKnALUaZkA7DS24B4SzpWFhAZm
9oIV6O9BItanZ9w7sdn6gyXorIjDRkVc8TY64bAqZV6quOkhicsPov6D2vdtz4of
/jwxJlS3AgMBAAECggEALOlvm74idXg2FFcXiO0rxq0GsVRF64VAxl/4s3C2Ir2n
10BPlMPyKlQ4kTI0+i3pBMTjBU8bes4eiQ99obTCCI12vrHUa0qq4EdBZv4DgSMV
7D71mtlvMcaBwxDgHXO2K2TTUOrOj4+6MU8HYtQx105IEZEf4CBhjAza/idviK0o
KizpEzotdj9VImoYwv4Osmn1wB0EwSVIUiunbtKtIqhYaTO9ionHwUn7fQThV//p
gxDd+dl47uNotI/a/vlKs60iZhbxjYUliBlCjbIU2SuyMjsNQA9tBwdSs03evqLR
zFwg7loUL+l6ntE3p8zDHwnDPE5UKjU/9WUCHM8HaQKBgQDkVcQ2yIlEyOXQpcS9
EijUBhbeh1ILBSl2bo1mOHO4VIQlSWe5v7n4sgfTu0EOrBtYfiUF/JiJ8Ne7fthM
e5pbajlks0KtAGInFep7xpNIcgE3/5rDzswF+OgVAosRZ6eWtumGjoqYkW1OoRQk
Jxd6AYczd73aL0e4yRC3SUDgjQKBgQDf1enDhVsRtN1TF3u1FeJ+FDWgmu2miM16
oGxilFmPUdE7GbDLhz7Yzu/blk2NEj9XZn+trbiFcy+u4Je/qmMhvkkGlnsWru7f
c4S6ozosCj8zsYVSKMijMAx+VZ29o6dtHPDvIYNywnUyblLshCeQssH2qjjaoD+4
AuunAyNjUwKBgBlja/DHdXPffqYneGupdD62+p39n+K3zTds7W37QuqxAwx+T/k4
Vz5O1U32mTI/cr7xL76tqmxUCji/zt8aMzyM4BrRT82aqE8+QZdHqiK5AmeulQ/G
k6rqVSvY34us4daBOhALE2AJc4T1ph6q9hJLzzOq0cJL1Ya3XJN0orEVAoGAZhDo
81sP19cdRRJkOoKsMMmOWpnK3DFtYQld4uW6oPux6L0iPOyC3+IcxYiX/Efh0jzO
46dfiJqpl5iaGa/cXDqkmfhsUD+cdQ/76g8cK5DQmQXNwVUPiDoUuFbaAutpIPwd
cS1a/y1ku4ZLEcaBNB4PDCc6nZaM9599TT7FGDkCgYA4L6Rvt6NWPKuQbNvSpKkX
atzpXxOKEAoabJ3wtg3UEzBs+ftQHl5uKj873PuPkfoks7VEOXy2hiJWg4QHGbiz
HoArJ9ahImxIAGGQ1TbKDWCOuwjiPc08OuqhdgMRKmdB0o0tkxo31vnZeV+C0ArO
5gHuWf+CsvNa577rEIrtKA==
-----END PRIVATE KEY-----";
    const RSA_PUB_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx6WByG4giJkk6I+0J1Mi
bjT8B59NobK8DCr6RuezPagT8yc0lH19W1MsLoPDKaMoPp0SmbW60dJbAj2M9zzk
QefaAouOzhjMiBpIp++mzYhYMsnE45fH70pc2y6BICw8wlKG4WOb9Dtqeky6G1Ls
8V03pkhdO4vT+NF2+r8AH58nA2Vh6y5WrBqKRTMqVvn38FLa0WE9JeJobX0M9nFs
NQX0N8HnVmoOJAM19dz/HdyUeYfGGeOlCpwC1GmZAOw0tuAeEs6VhYQGZvaCFejv
QSLWp2fcO7HZ+oMl6KyIw0ZFXPE2OuGwKmVeqrjpIYnLD6L+g9r3bc+KH/48MSZU
twIDAQAB
-----END PUBLIC KEY-----";
    const RSA_N: &str = "x6WByG4giJkk6I-0J1MibjT8B59NobK8DCr6RuezPagT8yc0lH19W1MsLoPDKaMoPp0SmbW60dJbAj2M9zzkQefaAouOzhjMiBpIp--mzYhYMsnE45fH70pc2y6BICw8wlKG4WOb9Dtqeky6G1Ls8V03pkhdO4vT-NF2-r8AH58nA2Vh6y5WrBqKRTMqVvn38FLa0WE9JeJobX0M9nFsNQX0N8HnVmoOJAM19dz_HdyUeYfGGeOlCpwC1GmZAOw0tuAeEs6VhYQGZvaCFejvQSLWp2fcO7HZ-oMl6KyIw0ZFXPE2OuGwKmVeqrjpIYnLD6L-g9r3bc-KH_48MSZUtw";
    const EC_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyT+SnlI/y/34/Oud
IuokzEGi1afAfIxve7A3EwB+QQ2hRANCAAQAGlMdpRRKhwE2PoHnq8c0NJbwXhTQ
b66USIu45R4k5tibvQ0rODNiqvnBuJ0RrBvZOVYAJwuJZ+c1j0prvd2+
-----END PRIVATE KEY-----";
    const EC_X: &str = "ABpTHaUUSocBNj6B56vHNDSW8F4U0G-ulEiLuOUeJOY";
    const EC_Y: &str = "2Ju9DSs4M2Kq-cG4nRGsG9k5VgAnC4ln5zWPSmu93b4";
    const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIH9jQ9gTDOPdCjjtq+rmHWAZDIfTfUTY2b5XrYGcFYxE
-----END PRIVATE KEY-----";
    const ED_X: &str = "RiWjCDj8lbzFJqjLJkgsBqsKAwM8_0fdh6SHJtmi_zY";

    const NOW: i64 = 1_700_000_000;
    const API: &str = "api-1";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ISS: &str = "https://idp.example";

    fn stage(external: Vec<IssuerKeys>) -> StageJwt {
        let gw = GatewayKey {
            auth_id: "auth-a".into(),
            secret: SECRET.to_vec(),
            expires_at: NOW + 3600,
        };
        StageJwt::compile(API, vec![gw], external).unwrap()
    }
    fn check(j: &StageJwt, token: &str, now: i64) -> Result<(), JwtError> {
        j.verify(
            Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .unwrap()
                    .as_bytes(),
            ),
            now,
        )
    }
    fn jwks() -> Value {
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": EC_X, "y": EC_Y},
            {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": ED_X},
            {"kty": "RSA", "kid": "enc1", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        ]})
    }
    fn ext(audience: Option<&str>) -> IssuerKeys {
        IssuerKeys {
            auth_id: "auth-x".into(),
            issuer: ISS.into(),
            audience: audience.map(Into::into),
            jwks: jwks(),
        }
    }
    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(Into::into);
        jsonwebtoken::encode(&h, &claims, key).unwrap()
    }
    fn rsa() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap()
    }
    fn claims(exp: i64) -> Value {
        json!({"iss": ISS, "aud": "my-api", "sub": "user-1", "exp": exp})
    }
    fn gw_claims(aud: &str, exp: i64) -> Value {
        json!({"iss": GATEWAY_ISSUER, "sub": "auth-a", "aud": aud, "exp": exp})
    }

    #[test]
    fn mint_verify_round_trip() {
        assert_eq!(new_secret().len(), 32);
        assert_ne!(new_secret(), new_secret());
        let t = mint(SECRET, "auth-a", API, NOW + 3600).unwrap();
        assert_ne!(
            t,
            mint(SECRET, "auth-a", API, NOW + 3600).unwrap(),
            "random jti"
        );
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(
            (h.alg, h.kid.as_deref()),
            (Algorithm::HS256, Some("auth-a"))
        );
        let c: Value = decode_json(t.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(
            (c["iss"].as_str(), c["sub"].as_str(), c["aud"].as_str()),
            (Some("apigw"), Some("auth-a"), Some(API))
        );
        assert!(c["iat"].is_i64() && c["jti"].is_string() && c["exp"] == NOW + 3600);
        let j = stage(vec![]);
        assert_eq!(check(&j, &t, NOW), Ok(()));
        assert_eq!(check(&j, &t, NOW), Ok(()));
        assert_eq!(
            j.verify(
                Some(
                    HeaderValue::from_str(&format!("bEaReR   {t}"))
                        .unwrap()
                        .as_bytes()
                ),
                NOW
            ),
            Ok(())
        );
        assert_eq!(mint(b"", "auth-a", API, NOW), Err(JwtError::Internal));
    }

    #[test]
    fn gateway_token_rejections() {
        let j = stage(vec![]);
        let other = mint(
            b"another-secret-another-secret-xx",
            "auth-a",
            API,
            NOW + 3600,
        )
        .unwrap();
        assert_eq!(check(&j, &other, NOW), Err(JwtError::BadSignature));
        // Tampered payload: a later exp under the original signature.
        let t = mint(SECRET, "auth-a", API, NOW + 3600).unwrap();
        let p: Vec<&str> = t.split('.').collect();
        let forged = B64URL.encode(serde_json::to_vec(&gw_claims(API, NOW + 99_999)).unwrap());
        assert_eq!(
            check(&j, &format!("{}.{forged}.{}", p[0], p[2]), NOW),
            Err(JwtError::BadSignature)
        );
        // Expired once now >= exp: no leeway for gateway tokens.
        assert_eq!(check(&j, &t, NOW + 3600), Err(JwtError::Expired));
        assert_eq!(check(&j, &t, NOW + 3599), Ok(()));
        // Wrong aud (a token of another API under a kid of this stage).
        assert_eq!(
            check(&j, &mint(SECRET, "auth-a", "api-2", NOW + 60).unwrap(), NOW),
            Err(JwtError::NotForStage)
        );
        // kid of an auth not connected to this stage.
        assert_eq!(
            check(&j, &mint(SECRET, "auth-b", API, NOW + 60).unwrap(), NOW),
            Err(JwtError::NotForStage)
        );
        // Not yet valid (nbf), no leeway.
        let key = EncodingKey::from_secret(SECRET);
        let mut c = gw_claims(API, NOW + 60);
        c["nbf"] = json!(NOW + 1);
        assert_eq!(
            check(&j, &sign(Algorithm::HS256, Some("auth-a"), &key, c), NOW),
            Err(JwtError::Expired)
        );
        // Another HMAC algorithm, and a missing exp.
        let hs384 = sign(
            Algorithm::HS384,
            Some("auth-a"),
            &key,
            gw_claims(API, NOW + 60),
        );
        assert_eq!(check(&j, &hs384, NOW), Err(JwtError::BadSignature));
        let no_exp = sign(
            Algorithm::HS256,
            Some("auth-a"),
            &key,
            json!({"iss": "apigw", "aud": API}),
        );
        assert_eq!(check(&j, &no_exp, NOW), Err(JwtError::Malformed));
        // The auth's own expiry bounds any token's exp.
        let short = GatewayKey {
            auth_id: "auth-a".into(),
            secret: SECRET.to_vec(),
            expires_at: NOW + 10,
        };
        let j2 = StageJwt::compile(API, vec![short], vec![]).unwrap();
        assert_eq!(check(&j2, &t, NOW + 9), Ok(()));
        assert_eq!(check(&j2, &t, NOW + 10), Err(JwtError::Expired));
        assert_eq!(
            j.cache.entries.load(Ordering::Relaxed),
            1,
            "failures are not cached"
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let j = stage(vec![]);
        let v = |s: &[u8]| j.verify(Some(HeaderValue::from_bytes(s).unwrap().as_bytes()), NOW);
        assert_eq!(j.verify(None, NOW), Err(JwtError::Missing));
        let big = format!("Bearer {}", "a".repeat(64 * 1024));
        let bad_json = format!("{}.{}.c2ln", B64URL.encode("{nope"), B64URL.encode("{}"));
        let array = format!(
            "{}.{}.c2ln",
            B64URL.encode(r#"{"alg":"HS256"}"#),
            B64URL.encode("[1]")
        );
        let crit = format!(
            "{}.{}.c2ln",
            B64URL.encode(r#"{"alg":"HS256","crit":["x"]}"#),
            B64URL.encode("{}")
        );
        for s in [
            "",
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearertoken",
            "Bearer a.b",
            "Bearer a.b.c.d",
            "Bearer !!.e30.e30",
            big.as_str(),
            &format!("Bearer {bad_json}"),
            &format!("Bearer {array}"),
            &format!("Bearer {crit}"),
            &format!(
                "Bearer {}",
                mint(SECRET, "auth-a", API, NOW + 60).unwrap() + "!"
            ),
        ] {
            assert_eq!(v(s.as_bytes()), Err(JwtError::Malformed), "{:.40}", s);
        }
        assert_eq!(
            v(b"Bearer \xff\xfe.e30.e30"),
            Err(JwtError::Malformed),
            "non-UTF-8"
        );
        assert_eq!(j.cache.entries.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn external_rs256_es256_eddsa() {
        let j = stage(vec![ext(Some("my-api"))]);
        let ec = EncodingKey::from_ec_pem(EC_PEM.as_bytes()).unwrap();
        let ed = EncodingKey::from_ed_pem(ED_PEM.as_bytes()).unwrap();
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::RS256, Some("rsa1"), &rsa(), claims(NOW + 60)),
                NOW
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::ES256, Some("ec1"), &ec, claims(NOW + 60)),
                NOW
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::EdDSA, Some("ed1"), &ed, claims(NOW + 60)),
                NOW
            ),
            Ok(())
        );
        let mut multi = claims(NOW + 60);
        multi["aud"] = json!(["x", "my-api"]);
        assert_eq!(
            check(&j, &sign(Algorithm::EdDSA, Some("ed1"), &ed, multi), NOW),
            Ok(())
        );
        // Wrong key for the kid, unknown kid, wrong aud, wrong iss, no iss.
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::ES256, Some("rsa1"), &ec, claims(NOW + 60)),
                NOW
            ),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::ES256, Some("ed1"), &ec, claims(NOW + 60)),
                NOW
            ),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::RS256, Some("nope"), &rsa(), claims(NOW + 60)),
                NOW
            ),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::RS256, None, &rsa(), claims(NOW + 60)),
                NOW
            ),
            Err(JwtError::BadSignature)
        );
        let mut c = claims(NOW + 60);
        c["aud"] = json!("other-api");
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::RS256, Some("rsa1"), &rsa(), c.clone()),
                NOW
            ),
            Err(JwtError::NotForStage)
        );
        c["aud"] = json!("my-api");
        c["iss"] = json!("https://evil.example");
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::RS256, Some("rsa1"), &rsa(), c.clone()),
                NOW
            ),
            Err(JwtError::NotForStage)
        );
        c.as_object_mut().unwrap().remove("iss");
        assert_eq!(
            check(&j, &sign(Algorithm::RS256, Some("rsa1"), &rsa(), c), NOW),
            Err(JwtError::NotForStage)
        );
        // No audience configured: any aud; a single-key JWKS: no kid needed.
        let single = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X}]});
        let j2 = stage(vec![IssuerKeys {
            auth_id: "a".into(),
            issuer: ISS.into(),
            audience: None,
            jwks: single,
        }]);
        let mut c = claims(NOW + 60);
        c["aud"] = json!("whatever");
        assert_eq!(
            check(&j2, &sign(Algorithm::EdDSA, None, &ed, c), NOW),
            Ok(())
        );
        assert_eq!(
            check(
                &j2,
                &sign(Algorithm::RS256, None, &rsa(), claims(NOW + 60)),
                NOW
            ),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn alg_confusion_and_none_fail() {
        let j = stage(vec![ext(None)]);
        for secret in [RSA_PUB_PEM.as_bytes(), RSA_N.as_bytes()] {
            let t = sign(
                Algorithm::HS256,
                Some("rsa1"),
                &EncodingKey::from_secret(secret),
                claims(NOW + 60),
            );
            assert_eq!(check(&j, &t, NOW), Err(JwtError::BadSignature));
        }
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none","kid":"rsa1"}"#),
            B64URL.encode(serde_json::to_vec(&claims(NOW + 60)).unwrap())
        );
        assert_eq!(check(&j, &none, NOW), Err(JwtError::BadSignature));
        // A gateway kid with an RSA signature: HS256 only.
        let t = sign(
            Algorithm::RS256,
            Some("auth-a"),
            &rsa(),
            gw_claims(API, NOW + 60),
        );
        assert_eq!(check(&j, &t, NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn external_leeway_and_nbf() {
        let j = stage(vec![ext(Some("my-api"))]);
        let t = |c: Value| sign(Algorithm::RS256, Some("rsa1"), &rsa(), c);
        assert_eq!(
            check(&j, &t(claims(NOW - 30)), NOW),
            Ok(()),
            "within 60 s leeway"
        );
        assert_eq!(check(&j, &t(claims(NOW - 60)), NOW), Err(JwtError::Expired));
        let mut c = claims(NOW + 600);
        c["nbf"] = json!(NOW + 30);
        assert_eq!(check(&j, &t(c.clone()), NOW), Ok(()));
        c["nbf"] = json!(NOW + 90);
        assert_eq!(
            check(&j, &t(c.clone()), NOW),
            Err(JwtError::Expired),
            "not yet valid"
        );
        c["nbf"] = json!(NOW as f64 + 0.5);
        c["exp"] = json!(NOW as f64 + 100.9);
        assert_eq!(check(&j, &t(c), NOW), Ok(()), "fractional NumericDate");
        let mut c = claims(0);
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            check(&j, &t(c), NOW),
            Err(JwtError::Malformed),
            "exp required"
        );
    }

    fn at(deadline: i64) -> Verified {
        Verified { deadline, auth: 0 }
    }

    #[test]
    fn the_accepting_auth_is_named_cached_or_not() {
        let j = stage(vec![ext(None)]);
        let gw_t = mint(SECRET, "auth-a", API, NOW + 3600).unwrap();
        let ext_t = sign(Algorithm::RS256, Some("rsa1"), &rsa(), claims(NOW + 100));
        for _ in 0..2 {
            for (t, want) in [(&gw_t, "auth-a"), (&ext_t, "auth-x")] {
                let h = HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
                let got = j
                    .verify_auth(Some(h.as_bytes()), NOW)
                    .map(|a| a.to_string());
                assert_eq!(got.as_deref(), Ok(want));
            }
        }
        assert_eq!(
            j.cache.entries.load(Ordering::Relaxed),
            2,
            "second round from the cache"
        );
        // The same Arc every time: nothing allocated per request.
        let h = HeaderValue::from_str(&format!("Bearer {gw_t}")).unwrap();
        let (a, b) = (
            j.verify_auth(Some(h.as_bytes()), NOW).unwrap(),
            j.verify_auth(Some(h.as_bytes()), NOW).unwrap(),
        );
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn cache_hits_skip_signature_and_honour_exp() {
        let j = stage(vec![ext(None)]);
        let ext_t = sign(Algorithm::RS256, Some("rsa1"), &rsa(), claims(NOW + 100));
        assert_eq!(check(&j, &ext_t, NOW), Ok(()));
        assert_eq!(
            j.cache.get(ext_t.as_bytes()).map(|v| v.deadline),
            Some(NOW + 100 + EXTERNAL_LEEWAY_SECS)
        );
        // A hit does no signature check: a planted entry is accepted...
        j.cache.insert(b"planted.token.x", at(NOW + 5), NOW);
        assert_eq!(check(&j, "planted.token.x", NOW + 4), Ok(()));
        // ...until its exp, then rejected and dropped.
        assert_eq!(
            check(&j, "planted.token.x", NOW + 5),
            Err(JwtError::Expired)
        );
        assert_eq!(j.cache.get(b"planted.token.x"), None);
        assert_eq!(check(&j, &ext_t, NOW + 160), Err(JwtError::Expired));
        assert_eq!(j.cache.entries.load(Ordering::Relaxed), 0);
        // Bounded: when full, expired entries are swept, else no insert.
        let c = TokenCache::new(2, 1 << 20);
        c.insert(b"a", at(NOW + 1), NOW);
        c.insert(b"b", at(NOW + 10), NOW);
        c.insert(b"c", at(NOW + 10), NOW);
        assert_eq!(
            (c.get(b"a"), c.get(b"c"), c.map.len()),
            (Some(at(NOW + 1)), None, 2)
        );
        c.insert(b"c", at(NOW + 10), NOW + 1);
        assert_eq!(
            (c.get(b"a"), c.get(b"c"), c.map.len()),
            (None, Some(at(NOW + 10)), 2)
        );
        let small = TokenCache::new(100, 4);
        small.insert(b"abc", at(NOW + 1), NOW);
        small.insert(b"de", at(NOW + 1), NOW);
        assert_eq!(
            (small.map.len(), small.bytes.load(Ordering::Relaxed)),
            (1, 3)
        );
    }

    #[test]
    fn cache_hit_is_cheap() {
        let j = stage(vec![]);
        let h = HeaderValue::from_str(&format!(
            "Bearer {}",
            mint(SECRET, "auth-a", API, NOW + 3600).unwrap()
        ))
        .unwrap();
        assert_eq!(j.verify(Some(h.as_bytes()), NOW), Ok(()));
        let n = 100_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(j
                .verify(Some(std::hint::black_box(h.as_bytes())), NOW)
                .is_ok());
        }
        let ns = start.elapsed().as_nanos() / n;
        eprintln!("cached verify: {ns} ns");
        if !cfg!(debug_assertions) {
            assert!(ns < 1000, "cached verify took {ns} ns");
        }
    }

    #[test]
    fn jwks_validation() {
        assert_eq!(validate_jwks(&jwks()), Ok(()));
        let bad = |keys: Value| validate_jwks(&json!({ "keys": keys })).unwrap_err();
        assert!(validate_jwks(&json!([])).unwrap_err().starts_with("keys:"));
        assert!(bad(json!([])).contains("no usable"));
        assert!(
            bad(json!([{"kty": "RSA", "use": "enc", "n": RSA_N, "e": "AQAB"}]))
                .contains("no usable")
        );
        let e = bad(
            json!([{"kty": "OKP", "crv": "Ed25519", "x": ED_X}, {"kty": "oct", "k": "c2VjcmV0"}]),
        );
        assert!(e.starts_with("keys[1]: kty \"oct\""), "{e}");
        assert!(
            bad(json!([{"kty": "EC", "crv": "P-384", "x": EC_X, "y": EC_Y}]))
                .starts_with("keys[0]: EC keys must")
        );
        assert!(bad(json!([{"kty": "RSA", "n": "AQAB", "e": "AQAB"}])).contains("2048"));
        assert!(
            bad(json!([{"kty": "RSA", "alg": "RS384", "n": RSA_N, "e": "AQAB"}])).contains("RS384")
        );
        assert!(
            bad(json!([{"kty": "RSA", "alg": "HS256", "n": RSA_N, "e": "AQAB"}])).contains("HS256")
        );
        assert!(bad(json!([{"kty": "OKP", "crv": "Ed25519", "x": "!!"}])).contains("base64url"));
        assert!(bad(json!([{"kty": "OKP", "crv": "X25519", "x": ED_X}])).contains("Ed25519"));
        let dup = json!([{"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": ED_X}, {"kty": "EC", "kid": "k", "crv": "P-256", "x": EC_X, "y": EC_Y}]);
        assert!(bad(dup).starts_with("keys[1]: duplicate kid"));
        assert!(bad(json!(["x"])).starts_with("keys[0]: must be an object"));
        let n0 = B64URL.encode([&[0u8][..], &B64URL.decode(RSA_N).unwrap()].concat());
        let zero = json!({"keys": [{"kty": "RSA", "n": n0, "e": "AAEAAQ"}]});
        let j = stage(vec![IssuerKeys {
            auth_id: "r".into(),
            issuer: ISS.into(),
            audience: None,
            jwks: zero,
        }]);
        assert_eq!(
            check(
                &j,
                &sign(Algorithm::RS256, None, &rsa(), claims(NOW + 60)),
                NOW
            ),
            Ok(()),
            "leading zeros"
        );
        let broken = IssuerKeys {
            auth_id: "z".into(),
            issuer: ISS.into(),
            audience: None,
            jwks: json!({"keys": []}),
        };
        assert!(StageJwt::compile(API, vec![], vec![broken])
            .unwrap_err()
            .starts_with("auth z: jwks keys:"));
    }

    /// Tokens minted by another library (PyJWT 2.15) with the same test keys.
    #[test]
    fn pyjwt_tokens_verify() {
        let j = stage(vec![ext(Some("my-api"))]);
        for t in [
            "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwiYXVkIjoibXktYXBpIiwic3ViIjoidSIsImV4cCI6MTcwMDAwMDA2MH0.YNZ7cfM7nVCl6X0xvak3zugsuNWA5SnUy2ATSEhmTRhQ4cRHb3m_BDLYYPdP-VkJx7XJJXLe4-efT3kdQu-1YfRkGOQNybuqRNEB-ghsaYkB1VPBjmKM_PyI6ZaxjPok5fWLdPMwZZqq1I1lyL8ZPKCtQ3lplOAfM-x1yIhsH7244qhDPawLFptkZnbyQpi6mzggeoZHFeD9-MA71Yz_sBOpln5hGbCNmHDnEvqSxme9_kdZDcgOZk63zFz-JXqeF0Ym9AV3zzMFwPUduSM23cpX6PrXp8mqxVhuYqBbvhmes-2p2HU3H1GMQ_s_4A2g3JOohdxSATEMtdjGpElylA",
            "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjMSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwiYXVkIjoibXktYXBpIiwic3ViIjoidSIsImV4cCI6MTcwMDAwMDA2MH0.Q9JA1hERViwZeHWxVX8jKEXYq9XuX7kPFbkkKRBp001p665BqmPchXvKob81GvJEnRQ_mqlaRX85h7Err_543Q",
            "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkMSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwiYXVkIjoibXktYXBpIiwic3ViIjoidSIsImV4cCI6MTcwMDAwMDA2MH0.rcmO6peurLf1zXZ8kRZLYS5yT4lAt-B-HZa1ep8TZ7KOuZaG06ca--AKZG_6bnZgvRa7XlCCM24UdBJ3ZpOICg",
        ] {
            assert_eq!(check(&j, t, NOW), Ok(()));
        }
    }
}
