//! Gateway configuration: a TOML file in sections, each section owned by
//! the module that uses it and defined in its own file here. Every setting
//! is declared once, with the [`settings!`] macro: its type, default and
//! doc comment (the description); `apigw --help`, `apigw config` and the
//! environment and legacy-key mappings are generated from those
//! declarations ([`Config::settings`]).
//!
//! Sources, later wins: defaults, the file, then the environment, where a
//! setting is `APIGW_<FLAT NAME>` (its old, flat key in capitals, e.g.
//! `APIGW_DATA_LISTEN`, `APIGW_MAX_BODY_BYTES`, `APIGW_CREDENTIALS='[...]'`)
//! or `APIGW_<SECTION>__<KEY>` (`APIGW_DATA__LISTEN`). A file of flat keys
//! (`data_listen = "..."`, the layout before sections) is still read: its
//! keys are moved into their sections ([`legacy`]). An unknown key is an
//! error naming it.
//!
//! May import: store's model (to parse IP/CIDR items), nothing else of
//! the gateway.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use std::path::Path;

/// One setting as documented: TOML `[section] key` (section empty for a
/// top-level key), the flat name it had before sections (also its
/// `APIGW_` environment name), and its doc comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    pub flat: &'static str,
    pub doc: &'static str,
}

impl Setting {
    /// `section.key`, or `key` at the top level.
    pub fn path(&self) -> String {
        if self.section.is_empty() {
            self.key.to_string()
        } else {
            format!("{}.{}", self.section, self.key)
        }
    }

    /// The doc comment as paragraphs of single-spaced text.
    pub fn paragraphs(&self) -> Vec<String> {
        self.doc
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// Declares a settings struct: each field with its type, default and flat
/// (pre-section) name, its `///` comment being its description. Generates
/// the struct (serde: missing keys take the default, unknown keys are
/// errors), its `Default`, and `SETTINGS`, the table help and output are
/// made from. The root struct also lists its sections (each a settings
/// struct, defaulted).
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident [$section:literal] {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty = $default:expr, flat $flat:literal;
            )*
        }
        $(sections {
            $(
                $(#[doc = $sdoc:literal])*
                $sfield:ident: $sty:ty;
            )*
        })?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
            $($(
                $(#[doc = $sdoc])*
                pub $sfield: $sty,
            )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)*
                    $($($sfield: <$sty>::default(),)*)?
                }
            }
        }

        impl $name {
            /// This struct's own settings (not its sections').
            pub const SETTINGS: &'static [$crate::config::Setting] = &[
                $($crate::config::Setting {
                    section: $section,
                    key: stringify!($field),
                    flat: $flat,
                    doc: concat!($($doc, "\n",)*),
                },)*
            ];

            /// Its settings, then each section's, in declaration order.
            pub fn settings() -> impl Iterator<Item = &'static $crate::config::Setting> {
                Self::SETTINGS.iter()$($(.chain(<$sty>::SETTINGS.iter()))*)?
            }
        }
    };
}

mod admin;
mod data;
mod drain;
mod jwks;
pub mod legacy;
mod quota;
mod render;
mod signature;
mod srn;
mod store;
mod telemetry;
mod tls;
mod upstream;

pub use admin::AdminConfig;
pub use data::DataConfig;
pub use drain::DrainConfig;
pub use jwks::JwksConfig;
pub use quota::QuotaConfig;
pub use render::settings_help;
pub use signature::{Credential, SignatureConfig};
pub use srn::SrnConfig;
pub use store::StoreConfig;
pub use telemetry::TelemetryConfig;
pub use tls::{TlsCertificate, TlsConfig};
pub use upstream::UpstreamConfig;

/// A function of `[[functions]]` (see `Config::functions`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredFunction {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<ConfiguredAuthHeader>,
}

/// A PrivateLink external service of `[[privatelink_services]]`: a
/// consumer's endpoint naming `id` reaches `target` (`host:port`, plain
/// TCP, no PROXY header).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredPrivatelinkService {
    pub id: String,
    pub target: String,
    /// An endpoint created for it is Active at once; else Requesting until
    /// the service's account approves it.
    #[serde(default)]
    pub auto_approve: bool,
    /// The account that approves, rejects and disconnects its endpoints.
    pub account_id: String,
}

/// The header a configured function's calls carry (the value is masked
/// when the configuration is printed).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredAuthHeader {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for ConfiguredAuthHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredAuthHeader")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

settings! {
    /// The whole configuration.
    pub struct Config [""] {
        /// tracing filter (`RUST_LOG` wins when set).
        log: String = "info".into(), flat "log";
        /// TEST ONLY: a file holding a clock offset in seconds (read when
        /// the time is asked for, at most every 20 ms), to move time across
        /// quota windows and report days. Empty: the system clock.
        test_clock_file: String = String::new(), flat "test_clock_file";
        /// Cloud Functions registered at start (`[[functions]]` tables of
        /// `id`, `account_id`, `name`, `url` and optional `description`,
        /// `timeout_ms`, `auth_header = { name = "..", value = ".." }`):
        /// created, or set back to these fields, in the store before
        /// serving; others stay as the management API left them.
        functions: Vec<ConfiguredFunction> = Vec::new(), flat "functions";
        /// PrivateLink external services (`[[privatelink_services]]` tables
        /// of `id`, `target` = `host:port`, `account_id` and optional
        /// `auto_approve`): endpoints may name their `id` as
        /// `privatelink_service_id`; PRIVATELINK methods through such an
        /// endpoint connect to `target`.
        privatelink_services: Vec<ConfiguredPrivatelinkService> = Vec::new(), flat "privatelink_services";
    }
    sections {
        /// `[data]`: the data plane.
        data: DataConfig;
        /// `[admin]`: the management API.
        admin: AdminConfig;
        /// `[signature]`: credentials and signature skew.
        signature: SignatureConfig;
        /// `[upstream]`: calls to integrations.
        upstream: UpstreamConfig;
        /// `[store]`: the durable store.
        store: StoreConfig;
        /// `[quota]`: quota counters.
        quota: QuotaConfig;
        /// `[jwks]`: external issuers' key sets.
        jwks: JwksConfig;
        /// `[srn]`: names in SRNs.
        srn: SrnConfig;
        /// `[tls]`: the TLS data-plane listener and certificates.
        tls: TlsConfig;
        /// `[telemetry]`: metrics, health and access logs.
        telemetry: TelemetryConfig;
        /// `[drain]`: graceful shutdown and restarts.
        drain: DrainConfig;
    }
}

impl Config {
    /// Defaults, then the file (if any), then `APIGW_*` environment
    /// variables.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_with_env(path, "APIGW_")
    }

    /// [`Config::load`] with another environment prefix (tests).
    fn load_with_env(path: Option<&Path>, env_prefix: &str) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                anyhow::bail!("config file {} does not exist", p.display());
            }
            fig = fig.merge(legacy::Sectioned(Toml::file(p)));
        }
        // APIGW_CONFIG names the file (`--config`), it is no setting.
        fig = fig.merge(
            Env::prefixed(env_prefix)
                .ignore(&["config"])
                .map(|k| legacy::env_key(k.as_str()).into()),
        );
        let cfg: Config = fig.extract().map_err(|e| anyhow::anyhow!("config: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.data.validate()?;
        self.admin.validate()?;
        self.signature.validate()?;
        self.store.validate()?;
        self.quota.validate()?;
        self.tls.validate()?;
        self.telemetry.validate()?;
        let mut seen = std::collections::HashSet::new();
        for p in &self.privatelink_services {
            if p.id.is_empty() || !seen.insert(p.id.as_str()) {
                anyhow::bail!("privatelink_services: empty or duplicate id {:?}", p.id);
            }
            if p.target
                .rsplit_once(':')
                .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
            {
                anyhow::bail!(
                    "privatelink_services {}: target {:?} is not host:port",
                    p.id,
                    p.target
                );
            }
        }
        Ok(())
    }

    /// A copy fit for printing: secrets replaced by `***`.
    pub fn masked(&self) -> Config {
        let mut c = self.clone();
        c.signature.mask_secrets();
        for f in &mut c.functions {
            if let Some(h) = &mut f.auth_header {
                h.value = "***".into();
            }
        }
        c
    }

    /// The effective configuration as sectioned TOML (every setting, in
    /// declaration order); what `apigw config` prints.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        render::to_toml(self)
    }
}

#[cfg(test)]
mod tests;
