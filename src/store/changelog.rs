//! Committed batches as JSON, for a change log that other nodes read
//! (PostgreSQL's `apigw_changes`). A batch is an array of changes, each
//! `{"op": "put"|"delete"|"delete_api", "kind", "key", "api_id", "body"}`:
//! `body` is the object's stored document (the same JSON as the objects
//! table holds) and only a put has one; a delete_api has only `api_id`.
//! New entity kinds need nothing here: they travel as their kind name and
//! document like the others.
//!
//! May import: the store's model.

use crate::store::model::{Change, Entity, Kind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Put,
    Delete,
    DeleteApi,
}

#[derive(Debug, Serialize, Deserialize)]
struct Logged {
    op: Op,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    key: String,
    #[serde(default)]
    api_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Box<serde_json::value::RawValue>>,
}

/// Why a logged batch cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("change log: {0}")]
    Json(#[from] serde_json::Error),
    #[error("change log: unknown kind {0:?}")]
    UnknownKind(String),
    #[error("change log: a put without a body")]
    NoBody,
}

/// The batch as JSON.
pub fn encode(changes: &[Change]) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        out.push(match c {
            Change::Put(e) => Logged {
                op: Op::Put,
                kind: e.kind().as_str().to_string(),
                key: e.key(),
                api_id: e.api_id().to_string(),
                body: Some(serde_json::value::RawValue::from_string(e.to_json()?)?),
            },
            Change::Delete { kind, key, api_id } => Logged {
                op: Op::Delete,
                kind: kind.as_str().to_string(),
                key: key.clone(),
                api_id: api_id.clone(),
                body: None,
            },
            Change::DeleteApi(api_id) => Logged {
                op: Op::DeleteApi,
                kind: String::new(),
                key: String::new(),
                api_id: api_id.clone(),
                body: None,
            },
        });
    }
    serde_json::to_string(&out)
}

/// A batch [`encode`] wrote.
pub fn decode(text: &str) -> Result<Vec<Change>, DecodeError> {
    let logged: Vec<Logged> = serde_json::from_str(text)?;
    let mut out = Vec::with_capacity(logged.len());
    for l in logged {
        let kind = || Kind::parse(&l.kind).ok_or_else(|| DecodeError::UnknownKind(l.kind.clone()));
        out.push(match l.op {
            Op::Put => {
                let body = l.body.as_ref().ok_or(DecodeError::NoBody)?;
                Change::Put(Entity::from_json(kind()?, body.get())?)
            }
            Op::Delete => Change::Delete {
                kind: kind()?,
                key: l.key,
                api_id: l.api_id,
            },
            Op::DeleteApi => Change::DeleteApi(l.api_id),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::*;

    #[test]
    fn a_batch_reads_back_as_written() {
        let api = Entity::Api(Api {
            id: "a1".into(),
            account_id: "acct".into(),
            name: "pets \"v2\"".into(),
            description: "ünïcode".into(),
            endpoint_type: EndpointType::Region,
            tags: vec![],
            created_at: now_rfc3339(),
        });
        let batch = vec![
            Change::Put(api),
            Change::Delete {
                kind: Kind::Stage,
                key: "a1:prod".into(),
                api_id: "a1".into(),
            },
            Change::DeleteApi("a0".into()),
        ];
        let text = encode(&batch).unwrap();
        assert!(
            text.contains(r#""op":"put","kind":"api","key":"a1""#),
            "{text}"
        );
        assert_eq!(decode(&text).unwrap(), batch);
    }

    #[test]
    fn unknown_kinds_and_bodiless_puts_are_errors() {
        let e = decode(r#"[{"op":"delete","kind":"nope","key":"k","api_id":""}]"#).unwrap_err();
        assert!(matches!(e, DecodeError::UnknownKind(k) if k == "nope"));
        let e = decode(r#"[{"op":"put","kind":"api","key":"k","api_id":"k"}]"#).unwrap_err();
        assert!(matches!(e, DecodeError::NoBody));
        assert!(decode("{").is_err());
    }
}
