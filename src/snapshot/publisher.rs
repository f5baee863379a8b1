//! The snapshot publisher: the one task that changes the published
//! snapshot after startup.
//!
//! It consumes the store's change feed ([`crate::store::feed`]): for each
//! batch (and any that queued behind it) it applies the changes to its own
//! copy of the [`State`], rebuilds only the APIs they touched
//! ([`Published::republish`]), publishes with arc-swap, then advances a
//! `watch` of the published version. Writers wait on that watch
//! ([`PublishedVersion::wait_for`]) so that their answer means "served".
//! It does not know or care where a batch came from (this process or,
//! with a shared store, another node): batches at or below the published
//! version are skipped, the others applied in order.
//!
//! Each batch it applies is also forwarded, before its version is
//! published, to whoever asked ([`spawn_forwarding`]: the management
//! API, whose own copy of the state must follow other nodes' commits
//! too); so a waiter that sees version `v` published finds every batch up
//! to `v` in the forward channel.
//!
//! When the feed closes or the task dies, the watch's sender goes with
//! it and waiters get [`NotPublished::PublisherGone`].
//!
//! May import: the snapshot builder, the store's state and feed.

use super::Published;
use crate::store::{FeedReceiver, FeedSender, State, Version};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The published version, as seen by writers waiting for their batch.
#[derive(Clone, Debug)]
pub struct PublishedVersion(watch::Receiver<Version>);

/// Why a committed version is not (yet) served.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NotPublished {
    #[error("the snapshot publisher has stopped")]
    PublisherGone,
    #[error("not published within {0:?}")]
    TimedOut(Duration),
}

impl PublishedVersion {
    /// The version the current snapshot includes.
    pub fn current(&self) -> Version {
        *self.0.borrow()
    }

    /// Wait until the published version changes; Err once the publisher
    /// is gone.
    pub async fn changed(&mut self) -> Result<(), NotPublished> {
        self.0
            .changed()
            .await
            .map_err(|_| NotPublished::PublisherGone)
    }

    /// Wait until the snapshot includes `version`, at most `within`.
    /// A version already published is Ok even if the publisher has
    /// stopped since.
    pub async fn wait_for(&self, version: Version, within: Duration) -> Result<(), NotPublished> {
        let mut rx = self.0.clone();
        let waited = tokio::time::timeout(within, rx.wait_for(|v| *v >= version))
            .await
            .map(|r| r.map(drop));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(NotPublished::PublisherGone),
            Err(_) => Err(NotPublished::TimedOut(within)),
        }
    }
}

/// Start the publisher on this runtime. `state` is what `published` was
/// built from and `version` the store's version of it; from then on the
/// task owns both and follows `feed`.
pub fn spawn(
    published: Arc<Published>,
    state: State,
    version: Version,
    feed: FeedReceiver,
) -> PublishedVersion {
    let (tx, rx) = watch::channel(version);
    tokio::spawn(run(published, state, tx, feed, None));
    PublishedVersion(rx)
}

/// [`spawn`], forwarding every batch applied to `forward` before its
/// version is published.
pub fn spawn_forwarding(
    published: Arc<Published>,
    state: State,
    version: Version,
    feed: FeedReceiver,
    forward: FeedSender,
) -> PublishedVersion {
    let (tx, rx) = watch::channel(version);
    tokio::spawn(run(published, state, tx, feed, Some(forward)));
    PublishedVersion(rx)
}

async fn run(
    published: Arc<Published>,
    mut state: State,
    version: watch::Sender<Version>,
    mut feed: FeedReceiver,
    forward: Option<FeedSender>,
) {
    let mut at = *version.borrow();
    let mut touched: Vec<String> = Vec::new();
    let mut domains = false;
    while let Some(first) = feed.recv().await {
        // Batches that queued meanwhile go out in the same snapshot.
        let mut next = Some(first);
        while let Some(batch) = next {
            if batch.version > at {
                domains |= batch.changes.iter().any(|c| c.touches_domains());
                for id in state.apply(&batch.changes) {
                    if !touched.contains(&id) {
                        touched.push(id);
                    }
                }
                at = batch.version;
                state.version = at;
                if let Some(f) = &forward {
                    // A closed forward channel (the management API gone)
                    // does not stop the data plane's updates.
                    f.announce(batch);
                }
            } else {
                tracing::debug!(
                    version = batch.version,
                    published = at,
                    "change feed: batch already applied, skipped"
                );
            }
            next = feed.try_recv();
        }
        // A batch may touch no API (a function no method uses): nothing
        // to rebuild, but its writer still waits on the version.
        if !touched.is_empty() || domains {
            published.republish_with_domains(&state, &touched, domains);
            touched.clear();
            domains = false;
        }
        published.mark_published(at);
        version.send_replace(at);
    }
    tracing::warn!(
        published = at,
        "change feed closed: the snapshot publisher stops"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::BuildContext;
    use crate::store::model::*;
    use crate::store::{feed, Committed};

    fn ctx() -> BuildContext {
        BuildContext {
            region: "kr-west1".into(),
            srn_offering: "scp".into(),
            limiters: Default::default(),
            stats: None,
            metrics: None,
            private_addr: None,
            external_services: Default::default(),
        }
    }

    /// An API with one GET /items deployed on stage `prod`.
    fn api(id: &str) -> Vec<Change> {
        let now = now_rfc3339();
        let method = Method {
            api_id: id.into(),
            resource_id: "items".into(),
            method_type: MethodType::GET,
            integration_type: IntegrationType::HTTP,
            endpoint_url: Some("http://127.0.0.1:9/items".into()),
            function_id: None,
            privatelink_endpoint_id: None,
            api_key_required: false,
            query_strings: Default::default(),
            request_headers: Default::default(),
            created_at: now.clone(),
        };
        vec![
            Change::Put(Entity::Api(Api {
                id: id.into(),
                account_id: "acct".into(),
                name: id.into(),
                description: String::new(),
                endpoint_type: EndpointType::Region,
                tags: vec![],
                created_at: now.clone(),
            })),
            Change::Put(Entity::Deployment(Deployment {
                id: "d1".into(),
                api_id: id.into(),
                description: String::new(),
                created_at: now.clone(),
                paths: vec!["/".into(), "/items".into()],
                methods: vec![DeployedMethod {
                    path: "/items".into(),
                    method,
                }],
            })),
            Change::Put(Entity::Stage(Stage {
                api_id: id.into(),
                name: "prod".into(),
                description: String::new(),
                deployment_id: "d1".into(),
                activated_at: now.clone(),
                created_at: now.clone(),
                cors: Cors::default(),
                jwt_enabled: false,
                usage_plan_id: None,
                connected_api_keys: vec![],
                access_control_id: String::new(),
                throttle: None,
                method_throttles: vec![],
                hide_credentials: false,
                canary: None,
                variables: Default::default(),
            })),
        ]
    }

    fn batch(version: Version, changes: Vec<Change>) -> Committed {
        Committed {
            version,
            changes: changes.into(),
        }
    }

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn announced_batch_is_published_then_version_advances() {
        let state = State::default();
        let published = Arc::new(Published::new(&state, ctx()));
        let (tx, rx) = feed::channel();
        let served = spawn(published.clone(), state, 0, rx);
        assert_eq!(served.current(), 0);

        assert!(tx.announce(batch(1, api("a1"))));
        served.wait_for(1, SOON).await.unwrap();
        let snap = published.load();
        let routes = snap.apis.get("a1").expect("a1 published");
        assert!(routes.stages.contains_key("prod"));
        assert_eq!(served.current(), 1);

        // Another API: a1's compiled routes are shared, not rebuilt.
        assert!(tx.announce(batch(2, api("a2"))));
        served.wait_for(2, SOON).await.unwrap();
        let snap2 = published.load();
        assert!(snap2.apis.contains_key("a2"));
        assert!(Arc::ptr_eq(
            snap.apis.get("a1").unwrap(),
            snap2.apis.get("a1").unwrap()
        ));

        // An old batch (a replay) is skipped; a gap in versions is fine.
        assert!(tx.announce(batch(2, vec![Change::DeleteApi("a1".into())])));
        assert!(tx.announce(batch(7, vec![Change::DeleteApi("a2".into())])));
        served.wait_for(7, SOON).await.unwrap();
        let snap3 = published.load();
        assert!(snap3.apis.contains_key("a1"), "replayed batch was applied");
        assert!(!snap3.apis.contains_key("a2"));
    }

    #[tokio::test]
    async fn waiting_ends_when_published_or_when_the_publisher_is_gone() {
        let state = State::default();
        let published = Arc::new(Published::new(&state, ctx()));
        let (tx, rx) = feed::channel();
        let served = spawn(published, state, 3, rx);
        // Already published (the loaded state's version).
        served.wait_for(3, SOON).await.unwrap();
        // Not announced: bounded wait.
        assert_eq!(
            served.wait_for(4, Duration::from_millis(50)).await,
            Err(NotPublished::TimedOut(Duration::from_millis(50)))
        );
        // The feed closes: the publisher stops and waiters are told.
        drop(tx);
        assert_eq!(
            served.wait_for(4, SOON).await,
            Err(NotPublished::PublisherGone)
        );
        served.wait_for(3, SOON).await.unwrap();
    }
}
