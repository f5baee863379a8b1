//! `[store]`: where the durable state lives (owner: `store`).

use std::path::PathBuf;

settings! {
    /// The durable store of APIs, deployments, keys, counters and reports.
    pub struct StoreConfig ["store"] {
        /// `sqlite://<path>`; the file is created and migrated on first
        /// start.
        url: String = "sqlite://./data/apigw.db".into(), flat "store_url";
    }
}

impl StoreConfig {
    pub fn sqlite_path(&self) -> anyhow::Result<PathBuf> {
        match self.url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => anyhow::bail!(
                "config: store.url {:?} is not supported (use sqlite://<path>)",
                self.url
            ),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.sqlite_path().map(drop)
    }
}
