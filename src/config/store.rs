//! `[store]`: where the durable state lives (owner: `store`).

use std::path::PathBuf;

settings! {
    /// The durable store of APIs, deployments, keys, counters and reports.
    pub struct StoreConfig ["store"] {
        /// `sqlite://<path>` (the file is created and migrated on first
        /// start) or `postgres://user@host:port/db` (a store shared by
        /// every node of a cluster; the schema is created and migrated on
        /// first start).
        url: String = "sqlite://./data/apigw.db".into(), flat "store_url";
        /// SQLite file for what stays on each node (quota counters and
        /// report rows). Empty: the `sqlite://` store's own file, or
        /// `./data/apigw-local.db` when the store is PostgreSQL.
        local_path: String = String::new(), flat "store_local_path";
        /// This node's name in the report rows of a PostgreSQL store
        /// (every node writes its own, List Reports sums them). Empty: a
        /// random id kept in `<local_path>.node-id`.
        node_id: String = String::new(), flat "store_node_id";
    }
}

/// The local file of a PostgreSQL node when `local_path` is not set.
pub const DEFAULT_LOCAL_PATH: &str = "./data/apigw-local.db";

impl StoreConfig {
    /// The SQLite file of quota counters and report rows.
    pub fn sqlite_path(&self) -> anyhow::Result<PathBuf> {
        if !self.local_path.is_empty() {
            return Ok(PathBuf::from(&self.local_path));
        }
        match self.url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ if self.is_postgres() => Ok(PathBuf::from(DEFAULT_LOCAL_PATH)),
            _ => anyhow::bail!(
                "config: store.url {:?} is not supported (use sqlite://<path> or postgres://...)",
                self.url
            ),
        }
    }

    /// This node's id: `node_id`, or one made up once and kept beside
    /// the local file.
    pub fn node_id(&self) -> anyhow::Result<String> {
        if !self.node_id.is_empty() {
            return Ok(self.node_id.clone());
        }
        let mut p = self.sqlite_path()?.into_os_string();
        p.push(".node-id");
        let p = PathBuf::from(p);
        if let Ok(s) = std::fs::read_to_string(&p) {
            let s = s.trim();
            if !s.is_empty() {
                return Ok(s.to_string());
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, &id)?;
        Ok(id)
    }

    /// Whether the store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.is_postgres() {
            if let Err(e) = self.url.parse::<postgres::Config>() {
                anyhow::bail!("config: store.url is not a valid PostgreSQL URL: {e}");
            }
        }
        self.sqlite_path().map(drop)
    }
}
