//! Daily report rows ([`crate::telemetry::reports::DailyRow`]) in the SQLite store:
//! table `stats_daily(api_id, stage, date, body)`, created on first use,
//! `body` the row as JSON. Saves are upserts in one transaction.

use super::sqlite::SqliteStore;
use crate::telemetry::reports::{DailyRow, StatsStore};
use rusqlite::params;
use std::sync::Arc;

const DDL: &str = "CREATE TABLE IF NOT EXISTS stats_daily (
    api_id TEXT NOT NULL,
    stage  TEXT NOT NULL,
    date   TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (api_id, stage, date)
)";

fn es(e: impl std::fmt::Display) -> String {
    format!("stats store: {e}")
}

/// A stats store on the node's local SQLite file (`store.local_path`, by
/// default the `sqlite://` store's own file: its own connection, WAL lets
/// it sit beside the object store).
pub fn open(path: &std::path::Path) -> anyhow::Result<Arc<dyn StatsStore>> {
    Ok(Arc::new(SqliteStore::open(path)?))
}

impl StatsStore for SqliteStore {
    fn load(&self) -> Result<Vec<DailyRow>, String> {
        let conn = self.conn.lock().map_err(es)?;
        conn.execute_batch(DDL).map_err(es)?;
        let mut stmt = conn
            .prepare("SELECT api_id, stage, date, body FROM stats_daily")
            .map_err(es)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(es)?;
        let mut out = Vec::new();
        for row in rows {
            let (api_id, stage, date, body) = row.map_err(es)?;
            out.extend(DailyRow::from_stored(api_id, stage, date, &body));
        }
        Ok(out)
    }

    fn save(&self, rows: &[DailyRow]) -> Result<(), String> {
        let mut conn = self.conn.lock().map_err(es)?;
        conn.execute_batch(DDL).map_err(es)?;
        let tx = conn.transaction().map_err(es)?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO stats_daily(api_id, stage, date, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(api_id, stage, date) DO UPDATE SET body = excluded.body",
                )
                .map_err(es)?;
            for r in rows {
                let body = serde_json::to_string(r).map_err(es)?;
                stmt.execute(params![r.api_id, r.stage, r.date, body])
                    .map_err(es)?;
            }
        }
        tx.commit().map_err(es)
    }

    fn delete(&self, api_id: &str, stage: Option<&str>) -> Result<(), String> {
        let conn = self.conn.lock().map_err(es)?;
        conn.execute_batch(DDL).map_err(es)?;
        match stage {
            None => conn.execute("DELETE FROM stats_daily WHERE api_id = ?1", params![api_id]),
            Some(s) => conn.execute(
                "DELETE FROM stats_daily WHERE api_id = ?1 AND stage = ?2",
                params![api_id, s],
            ),
        }
        .map(|_| ())
        .map_err(es)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_load_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("s.db")).unwrap();
        assert!(store.load().unwrap().is_empty());
        let mut r = DailyRow {
            api_id: "a".into(),
            stage: "s".into(),
            date: "2025-07-01".into(),
            count_2xx: 1,
            latency_hist: vec![(3, 1)],
            ..Default::default()
        };
        let mut r2 = r.clone();
        r2.stage = "t".into();
        store.save(&[r.clone(), r2.clone()]).unwrap();
        r.count_2xx = 5;
        store.save(&[r.clone()]).unwrap();
        let mut got = store.load().unwrap();
        got.sort_by(|a, b| a.stage.cmp(&b.stage));
        assert_eq!(got, vec![r.clone(), r2]);
        store.delete("a", Some("t")).unwrap();
        assert_eq!(store.load().unwrap(), vec![r]);
        store.delete("a", None).unwrap();
        assert!(store.load().unwrap().is_empty());
    }
}
