//! Change notifications: every tenant or key write publishes the changed id on the
//! `sntl:changes` channel; replicas subscribe and drop those cache entries at once.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::PubSubStream;

use super::{keys, RedisStore};
use crate::store::StoreError;

/// The longest pause between two re-subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl RedisStore {
    /// Streams the ids (tenant or key) that change, from a dedicated pub/sub connection (for a
    /// cluster, to the first seed node that answers: `PUBLISH` reaches every node).
    ///
    /// Fails only when no subscription can be made now. After that the stream never ends by
    /// itself: when the connection drops it re-subscribes with backoff (up to 2 s, trying the
    /// cluster's seed nodes in turn) and then yields an empty string, meaning "changes may
    /// have been missed: drop everything cached". Pub/sub is at-most-once and a silently
    /// stalled connection is not noticed, so callers also poll [`KeyStore::change_seq`]
    /// as a safety net.
    ///
    /// [`KeyStore::change_seq`]: crate::store::KeyStore::change_seq
    pub async fn subscribe_changes(
        &self,
    ) -> Result<impl Stream<Item = String> + Send + 'static, StoreError> {
        let clients = self.pubsub.clone();
        let timeout = self.op_timeout.max(Duration::from_secs(1));
        let (stream, next) = subscribe_any(&clients, 0, timeout).await?;
        let state = Subscription {
            clients,
            timeout,
            next,
            live: Some(stream),
        };
        Ok(futures_util::stream::unfold(state, Subscription::next_item))
    }
}

struct Subscription {
    clients: Vec<redis::Client>,
    timeout: Duration,
    /// The seed node to try first on the next re-subscription.
    next: usize,
    live: Option<PubSubStream>,
}

impl Subscription {
    async fn next_item(mut self) -> Option<(String, Self)> {
        let mut attempt: u32 = 0;
        loop {
            if let Some(stream) = self.live.as_mut() {
                if let Some(msg) = stream.next().await {
                    let id = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                    return Some((id, self));
                }
                tracing::warn!("redis change subscription lost; re-subscribing");
                self.live = None;
            } else {
                if attempt > 0 {
                    let backoff = Duration::from_millis(100)
                        .saturating_mul(1 << attempt.min(5))
                        .min(MAX_BACKOFF);
                    tokio::time::sleep(backoff).await;
                }
                match subscribe_any(&self.clients, self.next, self.timeout).await {
                    Ok((stream, next)) => {
                        self.live = Some(stream);
                        self.next = next;
                        // Whatever was published while we were away is lost: say so.
                        return Some((String::new(), self));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis change re-subscription failed");
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        }
    }
}

/// Subscribes through the first client (starting at `start`) that answers; returns the stream
/// and the index to start from next time (the same node).
async fn subscribe_any(
    clients: &[redis::Client],
    start: usize,
    timeout: Duration,
) -> Result<(PubSubStream, usize), StoreError> {
    let mut last = StoreError::Unavailable("no redis node to subscribe to".into());
    for i in 0..clients.len() {
        let index = (start + i) % clients.len();
        let client = &clients[index];
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(keys::CHANGES).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => return Ok((stream, index)),
            Ok(Err(e)) => last = e.into(),
            Err(_) => last = StoreError::Timeout,
        }
    }
    Err(last)
}
