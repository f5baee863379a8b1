//! Daily report rows of every node in the PostgreSQL store: table
//! `apigw_stats_daily(node_id, api_id, stage, date, body)`, one row per
//! node, API, stage and UTC day (`body` the row as JSON). A node loads
//! and saves its own rows; List Reports on any node adds the other
//! nodes' rows ([`StatsStore::others`]) to its own.

use crate::telemetry::reports::{DailyRow, StatsStore};
use postgres::{Client, Config, NoTls};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DDL: &str = "CREATE TABLE IF NOT EXISTS apigw_stats_daily (
    node_id TEXT NOT NULL,
    api_id  TEXT NOT NULL,
    stage   TEXT NOT NULL,
    date    TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (node_id, api_id, stage, date)
)";

pub struct PgStats {
    config: Config,
    node_id: String,
    /// `None` after a failure: the next use reconnects.
    conn: Mutex<Option<Client>>,
}

fn es(e: impl std::fmt::Display) -> String {
    format!("stats store: {e}")
}

/// The report rows of node `node_id` in the PostgreSQL store at `url`
/// (connected on first use).
pub fn open(url: &str, node_id: &str) -> anyhow::Result<Arc<dyn StatsStore>> {
    let mut config: Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(2));
    }
    config.application_name("apigw-stats");
    Ok(Arc::new(PgStats {
        config,
        node_id: node_id.to_string(),
        conn: Mutex::new(None),
    }))
}

impl PgStats {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, String> {
        let mut guard = self.conn.lock().map_err(es)?;
        if guard.as_ref().is_some_and(|c| c.is_closed()) {
            *guard = None;
        }
        let client = match guard.as_mut() {
            Some(c) => c,
            None => {
                let mut c = self.config.connect(NoTls).map_err(es)?;
                c.batch_execute(DDL).map_err(es)?;
                guard.insert(c)
            }
        };
        let out = f(client);
        if out.is_err() {
            *guard = None;
        }
        out.map_err(es)
    }
}

fn rows_of(rows: Vec<postgres::Row>) -> Vec<DailyRow> {
    let mut out = Vec::new();
    for row in rows {
        // try_get: a NULL or a column of another type (a hand-edited
        // table) skips the row instead of panicking.
        let cols = (|| -> Result<(String, String, String, String), postgres::Error> {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        })();
        match cols {
            Ok((api_id, stage, date, body)) => {
                out.extend(DailyRow::from_stored(api_id, stage, date, &body))
            }
            Err(e) => tracing::warn!(error = %e, "stats: skipping an unreadable row"),
        }
    }
    out
}

impl StatsStore for PgStats {
    fn load(&self) -> Result<Vec<DailyRow>, String> {
        let rows = self.with(|c| {
            c.query(
                "SELECT api_id, stage, date, body FROM apigw_stats_daily WHERE node_id = $1",
                &[&self.node_id],
            )
        })?;
        Ok(rows_of(rows))
    }

    fn save(&self, rows: &[DailyRow]) -> Result<(), String> {
        let bodies = rows
            .iter()
            .map(|r| serde_json::to_string(r).map_err(es))
            .collect::<Result<Vec<_>, _>>()?;
        self.with(|c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(
                "INSERT INTO apigw_stats_daily(node_id, api_id, stage, date, body)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (node_id, api_id, stage, date) DO UPDATE SET body = excluded.body",
            )?;
            for (r, body) in rows.iter().zip(&bodies) {
                tx.execute(&stmt, &[&self.node_id, &r.api_id, &r.stage, &r.date, body])?;
            }
            tx.commit()
        })
    }

    /// Every node's rows go: the API or stage is gone for all of them.
    fn delete(&self, api_id: &str, stage: Option<&str>) -> Result<(), String> {
        self.with(|c| {
            match stage {
                None => c.execute(
                    "DELETE FROM apigw_stats_daily WHERE api_id = $1",
                    &[&api_id],
                ),
                Some(s) => c.execute(
                    "DELETE FROM apigw_stats_daily WHERE api_id = $1 AND stage = $2",
                    &[&api_id, &s],
                ),
            }
            .map(drop)
        })
    }

    fn others(
        &self,
        api_id: &str,
        stages: &[String],
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyRow>, String> {
        let rows = self.with(|c| {
            c.query(
                "SELECT api_id, stage, date, body FROM apigw_stats_daily
                 WHERE node_id <> $1 AND api_id = $2 AND stage = ANY($3)
                   AND date >= $4 AND date <= $5",
                &[&self.node_id, &api_id, &stages, &from, &to],
            )
        })?;
        Ok(rows_of(rows))
    }
}

impl Drop for PgStats {
    fn drop(&mut self) {
        // A client owns a small runtime, which may not be dropped on an
        // async worker.
        if let Some(c) = self.conn.get_mut().ok().and_then(Option::take) {
            let _ = std::thread::Builder::new().spawn(move || drop(c));
        }
    }
}
