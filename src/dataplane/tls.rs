//! TLS termination for the data plane (rustls, ring): the certificates
//! ([`TlsCerts`]: the default one, `[[tls.certificates]]`, custom domains'),
//! chosen by SNI, reloadable without touching open connections, and the
//! rustls `ServerConfig` the TLS listener accepts with (ALPN h2 and
//! http/1.1, TLS 1.2 and 1.3).
//!
//! Choosing: the SNI name (ASCII case-insensitive) exactly, then a
//! wildcard `*.rest` for a name `label.rest` (one label only), then the
//! default certificate (`tls.cert_file`), which is also what a client
//! sending no SNI gets. A custom domain's certificate wins over a
//! `[[tls.certificates]]` one for the same name.
//!
//! Reloading: the table of certificates sits in an `ArcSwap`; a reload
//! builds a new table and swaps it in. Handshakes in progress and open
//! connections keep what they have (a connection's certificate is only
//! used in its handshake). A file that fails to load keeps that name's
//! previous certificate and logs an error naming the file. An expired (or
//! not yet valid) certificate is still served, with a warning naming the
//! file and its validity.
//!
//! Private keys are never logged: errors about a key file name the file
//! and what kind of problem it is, never its content.
//!
//! May import: config.

use crate::config::TlsConfig;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A custom domain's certificate (from the custom-domains feature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainCert {
    /// The name it is served to: `api.example.com`, or `*.example.com`
    /// (one label).
    pub domain_name: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A certificate with its key, ready for handshakes.
type Key = Arc<CertifiedKey>;

/// What handshakes look names up in; replaced whole on a change.
#[derive(Default)]
struct Table {
    default: Option<Key>,
    /// Lower-case names, without a trailing dot.
    exact: HashMap<String, Key>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Key>,
}

impl Table {
    fn insert(&mut self, name: &str, key: Key) {
        let name = normalize(name);
        match name.strip_prefix("*.") {
            Some(rest) => self.wildcard.insert(rest.to_string(), key),
            None => self.exact.insert(name, key),
        };
    }

    fn lookup(&self, sni: Option<&str>) -> Option<Key> {
        if let Some(name) = sni {
            let name = normalize(name);
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, rest)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(rest) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }

    fn len(&self) -> usize {
        usize::from(self.default.is_some()) + self.exact.len() + self.wildcard.len()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// One certificate file pair as last loaded: the key and the names it is
/// served to (for `[[tls.certificates]]`, its subjectAltName DNS names).
#[derive(Clone)]
struct Loaded {
    key: Key,
    names: Vec<String>,
}

/// What is loaded, kept to fall back on when a file fails to load.
#[derive(Default)]
struct State {
    default: Option<Key>,
    /// `[[tls.certificates]]`, in config order (same index as `extra`).
    extra: Vec<Option<Loaded>>,
    /// Custom domains as last set, and the key of each name.
    domains: Vec<DomainCert>,
    domain_keys: HashMap<String, Key>,
}

/// The data plane's certificates, shared by the TLS listener (through
/// [`TlsCerts::server_config`]) and whoever reloads them.
pub struct TlsCerts {
    provider: Arc<CryptoProvider>,
    default_files: (PathBuf, PathBuf),
    extra_files: Vec<(PathBuf, PathBuf)>,
    /// Held while loading; one change at a time.
    state: Mutex<State>,
    table: ArcSwap<Table>,
}

impl std::fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCerts")
            .field("default_files", &self.default_files)
            .field("extra_files", &self.extra_files)
            .field("loaded", &self.table.load().len())
            .finish()
    }
}

impl TlsCerts {
    /// Load the default certificate and `[[tls.certificates]]` of `cfg`.
    /// Unlike a reload, any file that cannot be loaded is an error here
    /// (the gateway does not start on a broken config). Expired
    /// certificates load, with a warning.
    pub fn from_config(cfg: &TlsConfig) -> anyhow::Result<Arc<TlsCerts>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let default_files = (PathBuf::from(&cfg.cert_file), PathBuf::from(&cfg.key_file));
        let extra_files: Vec<(PathBuf, PathBuf)> = cfg
            .certificates
            .iter()
            .map(|c| (PathBuf::from(&c.cert_file), PathBuf::from(&c.key_file)))
            .collect();
        let default = load_pair(&provider, &default_files.0, &default_files.1)
            .map_err(|e| anyhow::anyhow!("tls: default certificate: {e}"))?;
        let mut extra = Vec::with_capacity(extra_files.len());
        for (cert, key) in &extra_files {
            let k = load_pair(&provider, cert, key)
                .map_err(|e| anyhow::anyhow!("tls.certificates: {e}"))?;
            extra.push(Some(loaded_with_names(k, cert)));
        }
        let certs = TlsCerts {
            provider,
            default_files,
            extra_files,
            state: Mutex::new(State {
                default: Some(default),
                extra,
                ..State::default()
            }),
            table: ArcSwap::from_pointee(Table::default()),
        };
        certs.publish(&certs.lock_state());
        Ok(Arc::new(certs))
    }

    /// The custom domains' certificates, replacing the previous set. Their
    /// files are read now (blocking, small files). A domain whose files
    /// fail to load keeps the certificate it had (or, new, gets the
    /// default one); an error naming the file is logged.
    pub fn set_domain_certs(&self, certs: Vec<DomainCert>) {
        let mut st = self.lock_state();
        st.domains = certs;
        self.load_domains(&mut st);
        self.publish(&st);
    }

    /// Read every certificate file again (default, `[[tls.certificates]]`,
    /// custom domains) and swap the new set in; open connections are not
    /// touched. A file that fails keeps its name's previous certificate
    /// and logs an error naming the file. Never panics.
    pub fn reload(&self) {
        let mut st = self.lock_state();
        match load_pair(&self.provider, &self.default_files.0, &self.default_files.1) {
            Ok(k) => st.default = Some(k),
            Err(e) => {
                tracing::error!(error = %e, "tls reload: the default certificate keeps its previous one")
            }
        }
        for (i, (cert, key)) in self.extra_files.iter().enumerate() {
            match load_pair(&self.provider, cert, key) {
                Ok(k) => {
                    if let Some(slot) = st.extra.get_mut(i) {
                        *slot = Some(loaded_with_names(k, cert));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "tls reload: tls.certificates entry keeps its previous one")
                }
            }
        }
        self.load_domains(&mut st);
        self.publish(&st);
        tracing::info!(
            certificates = self.table.load().len(),
            "tls certificates reloaded"
        );
    }

    /// How many names (and the default) have a certificate now.
    pub fn count(&self) -> usize {
        self.table.load().len()
    }

    /// The rustls configuration of the TLS listener: these certificates
    /// (looked up at each handshake, so reloads apply to new connections),
    /// TLS 1.2 and 1.3, ALPN h2 then http/1.1.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(Arc::new(cfg))
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while loading cannot leave the state half-written in a
        // way that matters (every field is replaced whole): go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load_domains(&self, st: &mut State) {
        let mut keys = HashMap::with_capacity(st.domains.len());
        for d in &st.domains {
            let name = normalize(&d.domain_name);
            match load_pair(&self.provider, &d.cert_file, &d.key_file) {
                Ok(k) => {
                    keys.insert(name, k);
                }
                Err(e) => {
                    let kept = st.domain_keys.get(&name).cloned();
                    tracing::error!(
                        domain = %d.domain_name,
                        error = %e,
                        kept_previous = kept.is_some(),
                        "tls: custom domain certificate not loaded"
                    );
                    if let Some(k) = kept {
                        keys.insert(name, k);
                    }
                }
            }
        }
        st.domain_keys = keys;
    }

    fn publish(&self, st: &State) {
        let mut t = Table {
            default: st.default.clone(),
            ..Table::default()
        };
        for l in st.extra.iter().flatten() {
            for n in &l.names {
                t.insert(n, l.key.clone());
            }
        }
        // Custom domains last: theirs wins for the same name.
        for (n, k) in &st.domain_keys {
            t.insert(n, k.clone());
        }
        self.table.store(Arc::new(t));
    }
}

/// A TLS client connection parks like any other: waiting reads one byte
/// of plaintext (the default method). That is correct with rustls holding
/// decrypted bytes already: the read returns them at once instead of
/// waiting on the socket.
impl crate::net::WaitReadable for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

/// The resolver rustls calls at each handshake.
#[derive(Debug)]
struct Resolver(Arc<TlsCerts>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.table.load().lookup(hello.server_name())
    }
}

fn loaded_with_names(key: Key, cert_file: &Path) -> Loaded {
    let names = key
        .cert
        .first()
        .map(|c| cert_info(c).dns_names)
        .unwrap_or_default();
    if names.is_empty() {
        tracing::warn!(
            file = %cert_file.display(),
            "tls.certificates: certificate has no DNS names in its subjectAltName; it is never chosen"
        );
    }
    Loaded { key, names }
}

/// Load a certificate chain and its private key (PEM); warn when the
/// certificate is outside its validity period. The error names the file;
/// it never holds key material.
fn load_pair(provider: &CryptoProvider, cert_file: &Path, key_file: &Path) -> Result<Key, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", cert_file.display(), pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: {}", key_file.display(), pem_error(&e)))?;
    let ck = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))?;
    if let Some(leaf) = ck.cert.first() {
        warn_if_not_valid_now(cert_file, &cert_info(leaf));
    }
    Ok(Arc::new(ck))
}

/// What went wrong reading a PEM file, without any of its content.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        E::NoItemsFound => "no PEM item of the expected kind in it".into(),
        E::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        E::IllegalSectionStart { .. } => "a malformed PEM BEGIN line".into(),
        E::Base64Decode(_) => "PEM content is not valid base64".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// What the gateway reads of a certificate itself (rustls does not say).
#[derive(Default, Debug, PartialEq)]
struct CertInfo {
    not_before: Option<time::OffsetDateTime>,
    not_after: Option<time::OffsetDateTime>,
    dns_names: Vec<String>,
}

fn warn_if_not_valid_now(file: &Path, info: &CertInfo) {
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    if let Some(na) = info.not_after.filter(|na| *na < now) {
        tracing::warn!(
            file = %file.display(),
            not_after = %fmt(na),
            "tls: certificate has expired; it is still served"
        );
    }
    if let Some(nb) = info.not_before.filter(|nb| *nb > now) {
        tracing::warn!(
            file = %file.display(),
            not_before = %fmt(nb),
            "tls: certificate is not valid yet; it is still served"
        );
    }
}

/// Validity and subjectAltName DNS names of a DER certificate (X.509:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?,
/// serial, signature, issuer, validity SEQUENCE { notBefore, notAfter },
/// subject, spki, ..., [3] extensions } ... }). Whatever cannot be read
/// stays empty.
fn cert_info(der: &[u8]) -> CertInfo {
    use simple_asn1::ASN1Block as B;
    let mut info = CertInfo::default();
    let Ok(blocks) = simple_asn1::from_der(der) else {
        return info;
    };
    let Some(B::Sequence(_, cert)) = blocks.first() else {
        return info;
    };
    let Some(B::Sequence(_, tbs)) = cert.first() else {
        return info;
    };
    let time_of = |b: &B| match b {
        B::UTCTime(_, t) | B::GeneralizedTime(_, t) => Some(t.assume_utc()),
        _ => None,
    };
    for item in tbs {
        match item {
            B::Sequence(_, v) if v.len() == 2 && time_of(&v[0]).is_some() => {
                info.not_before = time_of(&v[0]);
                info.not_after = time_of(&v[1]);
            }
            B::Explicit(simple_asn1::ASN1Class::ContextSpecific, _, tag, exts)
                if *tag == simple_asn1::BigUint::from(3u8) =>
            {
                if let B::Sequence(_, exts) = exts.as_ref() {
                    info.dns_names = san_dns_names(exts);
                }
            }
            _ => {}
        }
    }
    info
}

fn san_dns_names(exts: &[simple_asn1::ASN1Block]) -> Vec<String> {
    use simple_asn1::ASN1Block as B;
    let san = simple_asn1::oid!(2, 5, 29, 17);
    let mut out = Vec::new();
    for ext in exts {
        let B::Sequence(_, parts) = ext else { continue };
        let (Some(B::ObjectIdentifier(_, oid)), Some(B::OctetString(_, value))) =
            (parts.first(), parts.last())
        else {
            continue;
        };
        if *oid != san {
            continue;
        }
        let Ok(names) = simple_asn1::from_der(value) else {
            continue;
        };
        let Some(B::Sequence(_, names)) = names.first() else {
            continue;
        };
        for n in names {
            // dNSName [2] IMPLICIT IA5String
            if let B::Unknown(simple_asn1::ASN1Class::ContextSpecific, false, _, tag, bytes) = n {
                if *tag == simple_asn1::BigUint::from(2u8) {
                    if let Ok(s) = std::str::from_utf8(bytes) {
                        out.push(s.to_string());
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key that cannot sign: enough for lookups.
    #[derive(Debug)]
    struct NoKey;
    impl rustls::sign::SigningKey for NoKey {
        fn choose_scheme(
            &self,
            _offered: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }
        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    fn key() -> Key {
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![1u8])],
            Arc::new(NoKey),
        ))
    }

    #[test]
    fn lookup_exact_then_one_label_wildcard_then_default() {
        let (d, a, w) = (key(), key(), key());
        let mut t = Table {
            default: Some(d.clone()),
            ..Table::default()
        };
        t.insert("A.example.com.", a.clone());
        t.insert("*.Example.com", w.clone());
        let is = |got: Option<Key>, want: &Key| got.is_some_and(|g| Arc::ptr_eq(&g, want));
        assert!(is(t.lookup(Some("a.EXAMPLE.com")), &a));
        assert!(is(t.lookup(Some("b.example.com")), &w));
        // A wildcard matches exactly one label.
        assert!(is(t.lookup(Some("x.b.example.com")), &d));
        assert!(is(t.lookup(Some("example.com")), &d));
        assert!(is(t.lookup(None), &d));
    }
}
