//! The change feed: every batch a store commits, announced with the
//! version the store gave it, in commit order.
//!
//! A store holds the sending half ([`FeedSender`]) and announces each
//! batch after it is durable; the snapshot publisher holds the receiving
//! half ([`FeedReceiver`]) and is its only consumer. A batch carries no
//! origin: for SQLite the store announces its own commits in-process; a
//! store shared by several nodes (PostgreSQL, LISTEN/NOTIFY) would announce
//! every node's commits from its change log through the same sender, and
//! the publisher would treat them alike.
//!
//! Versions only go up. They need not be contiguous (a database sequence
//! may skip), and a batch at or below a version already applied is old
//! news (a replay after a reconnect, or a commit already in the loaded
//! state) that the consumer skips.
//!
//! May import: the store's model (and tokio).

use crate::store::model::Change;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Position in a store's history: the version of the last committed batch.
/// 0 is the state before the first batch this process saw.
pub type Version = u64;

/// One committed batch.
#[derive(Clone, Debug)]
pub struct Committed {
    pub version: Version,
    /// The changes, in the order they were committed.
    pub changes: Arc<[Change]>,
}

/// The sending half of the feed, given to a store.
///
/// Unbounded: a send never blocks the committing thread. What it holds is
/// bounded in practice by the writers, who wait for each of their batches
/// to be published before they answer.
#[derive(Clone, Debug)]
pub struct FeedSender(mpsc::UnboundedSender<Committed>);

/// The receiving half of the feed, read by the snapshot publisher.
#[derive(Debug)]
pub struct FeedReceiver(mpsc::UnboundedReceiver<Committed>);

/// A new feed.
pub fn channel() -> (FeedSender, FeedReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (FeedSender(tx), FeedReceiver(rx))
}

impl FeedSender {
    /// Announce a committed batch; false when nobody listens any more
    /// (the publisher stopped).
    pub fn announce(&self, batch: Committed) -> bool {
        self.0.send(batch).is_ok()
    }

    /// Whether nobody listens any more.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl FeedReceiver {
    /// The next batch; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Committed> {
        self.0.recv().await
    }

    /// The next batch if one is already waiting.
    pub fn try_recv(&mut self) -> Option<Committed> {
        self.0.try_recv().ok()
    }
}
