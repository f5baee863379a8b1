//! The compiled APIs of a snapshot, by API id, split into [`SHARDS`]
//! shards that successive snapshots share.
//!
//! Publishing after a change copies the map: with one flat map that copy
//! was every API id and `Arc` (and dropping the old snapshot freed them
//! all again, on whichever thread released it last), so each management
//! write cost more the more APIs were stored. Here a copy is the table of
//! shard pointers; a change then copies only the shards it touches
//! ([`Arc::make_mut`]), about `APIs / SHARDS` entries each.
//!
//! A lookup hashes the id once to pick the shard (ahash, keyed per
//! process) and once more inside the shard's map: two hashes of a short
//! string and no lock.
//!
//! May import: nothing of the crate but the snapshot's own types.

use super::{ApiRoutes, FastMap};
use std::sync::Arc;

/// How many shards: copying the table costs this many `Arc` increments;
/// a shard holds about 1/`SHARDS` of the APIs.
pub const SHARDS: usize = 128;

type Shard = FastMap<String, Arc<ApiRoutes>>;

/// API id → compiled routes. Cloning it is O([`SHARDS`]); the clone
/// shares every shard until one is changed.
#[derive(Clone)]
pub struct ApiMap {
    /// Picks the shard; the same for every clone of the map.
    pick: ahash::RandomState,
    shards: Box<[Arc<Shard>]>,
    len: usize,
}

impl Default for ApiMap {
    fn default() -> Self {
        let empty = Arc::new(Shard::default());
        ApiMap {
            pick: ahash::RandomState::new(),
            shards: (0..SHARDS).map(|_| empty.clone()).collect(),
            len: 0,
        }
    }
}

impl ApiMap {
    fn shard_of(&self, id: &str) -> usize {
        // SHARDS is a power of two: the low bits of the hash.
        (self.pick.hash_one(id) as usize) & (SHARDS - 1)
    }

    #[inline]
    pub fn get(&self, id: &str) -> Option<&Arc<ApiRoutes>> {
        self.shards[self.shard_of(id)].get(id)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Insert or replace; copies the API's shard if another map shares it.
    pub fn insert(&mut self, id: String, routes: Arc<ApiRoutes>) {
        let i = self.shard_of(&id);
        if Arc::make_mut(&mut self.shards[i])
            .insert(id, routes)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Remove; copies the API's shard only when the id is there.
    pub fn remove(&mut self, id: &str) {
        let i = self.shard_of(id);
        if !self.shards[i].contains_key(id) {
            return;
        }
        if Arc::make_mut(&mut self.shards[i]).remove(id).is_some() {
            self.len -= 1;
        }
    }

    /// Every (id, routes), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<ApiRoutes>)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

impl std::fmt::Debug for ApiMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiMap")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::EndpointType;

    fn routes(id: &str) -> Arc<ApiRoutes> {
        Arc::new(ApiRoutes {
            api_id: id.into(),
            account_id: "acct".into(),
            endpoint_type: EndpointType::Region,
            api_srn: String::new(),
            policy: None,
            all_keys: Default::default(),
            endpoints: Default::default(),
            stages: Default::default(),
        })
    }

    #[test]
    fn behaves_as_a_map_and_a_clone_shares_all_but_what_changed() {
        let mut a = ApiMap::default();
        assert!(a.is_empty());
        let ids: Vec<String> = (0..1000).map(|i| format!("api{i:04}")).collect();
        for id in &ids {
            a.insert(id.clone(), routes(id));
        }
        a.insert(ids[0].clone(), routes(&ids[0])); // a replacement
        assert_eq!(a.len(), 1000);
        assert_eq!(a.iter().count(), 1000);
        for id in &ids {
            assert_eq!(a.get(id).map(|r| r.api_id.as_str()), Some(id.as_str()));
        }
        assert!(a.get("api1000").is_none());

        let mut b = a.clone();
        b.remove("api0001");
        b.remove("not-there");
        b.insert("new".into(), routes("new"));
        assert_eq!((a.len(), b.len()), (1000, 1000));
        assert!(a.contains_key("api0001") && !b.contains_key("api0001"));
        assert!(!a.contains_key("new") && b.contains_key("new"));
        // Untouched APIs are the same compiled routes, and all but the
        // (at most two) changed shards are the same shard.
        assert!(Arc::ptr_eq(
            a.get("api0500").unwrap(),
            b.get("api0500").unwrap()
        ));
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 2, "{shared} of {SHARDS} shards shared");
        // The shards hold what they should (a removal of an absent id did
        // not copy its shard).
        let total: usize = b.shards.iter().map(|s| s.len()).sum();
        assert_eq!(total, b.len());
    }
}
