//! The feed: messages the writer has just committed to the outbox, in commit order (which is
//! sequence order), so that the outbox worker can take them without reading them back. It is
//! a bounded copy, never the record: the outbox table is. When the feed overflows (no worker,
//! or a worker stuck behind a failing service) it is emptied and its epoch moves on, and the
//! worker, seeing the epoch change, reads the table again until it has caught up.
//!
//! The feed also wakes the worker: the writer thread pushes right after the commit, before
//! the accepting request hears "stored", so delivery starts without waiting for that
//! request's answer to be written.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Pending;

/// Most messages held.
const MAX_MESSAGES: usize = 4096;
/// Most bytes of stored message text held.
const MAX_BYTES: usize = 8 << 20;

/// A message as stored, with the size of its stored text (the feed's byte bound).
pub(super) type Stored = (Pending, usize);

#[derive(Debug, Default)]
pub(super) struct Feed {
    inner: Mutex<Inner>,
    /// Notified on each push (a permit is kept while nobody waits).
    arrived: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Stored>,
    bytes: usize,
    /// Moves on each time messages were dropped from the feed unread.
    epoch: u64,
}

/// What the worker took from the feed.
#[derive(Debug)]
pub struct Fed {
    /// The feed's epoch when taken: a different one than the worker caught up at means the
    /// feed lost messages since, and the table must be read.
    pub epoch: u64,
    pub messages: Vec<Pending>,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Messages just committed, in sequence order, each with the size of its stored text.
    pub(super) fn push(&self, committed: Vec<Stored>) {
        if committed.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            for (pending, bytes) in committed {
                if inner.queue.len() >= MAX_MESSAGES || inner.bytes + bytes > MAX_BYTES {
                    inner.queue.clear();
                    inner.bytes = 0;
                    inner.epoch += 1;
                }
                inner.bytes += bytes;
                inner.queue.push_back((pending, bytes));
            }
        }
        self.arrived.notify_one();
    }

    /// Resolves after the next push, or at once if one came since the last wait.
    pub(super) fn arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.arrived.notified()
    }

    /// The epoch now.
    pub(super) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Up to `limit` messages after sequence number `after` (older ones, already delivered
    /// from the table, are dropped), oldest first.
    pub(super) fn take(&self, after: i64, limit: usize) -> Fed {
        let mut guard = self.lock();
        let inner = &mut *guard;
        while inner.queue.front().is_some_and(|(p, _)| p.seq <= after) {
            if let Some((_, bytes)) = inner.queue.pop_front() {
                inner.bytes -= bytes;
            }
        }
        let n = inner.queue.len().min(limit);
        let mut messages = Vec::with_capacity(n);
        for (pending, bytes) in inner.queue.drain(..n) {
            messages.push(pending);
            inner.bytes -= bytes;
        }
        Fed {
            epoch: inner.epoch,
            messages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Recipient};

    fn pending(seq: i64) -> Stored {
        let message = Message {
            hub: "hub".into(),
            to: Recipient::All,
            target: "t".into(),
            arguments: Vec::new(),
            excluded: Vec::new(),
        };
        let p = Pending {
            seq,
            id: format!("m{seq}"),
            message,
            source: "route:r".into(),
            accepted_ms: 0,
        };
        (p, 1000)
    }

    fn seqs(fed: &Fed) -> Vec<i64> {
        fed.messages.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn takes_in_order_after_what_was_delivered() {
        let feed = Feed::default();
        feed.push((1..=5).map(pending).collect());
        let fed = feed.take(2, 2);
        assert_eq!((fed.epoch, seqs(&fed)), (0, vec![3, 4]));
        assert_eq!(seqs(&feed.take(0, 10)), [5]);
        assert!(feed.take(0, 10).messages.is_empty());
    }

    #[test]
    fn an_overflow_empties_it_and_moves_the_epoch() {
        let feed = Feed::default();
        feed.push((1..=MAX_MESSAGES as i64 + 1).map(pending).collect());
        assert_eq!(feed.epoch(), 1);
        let fed = feed.take(0, usize::MAX);
        assert_eq!((fed.epoch, seqs(&fed)), (1, vec![MAX_MESSAGES as i64 + 1]));
        // By bytes too.
        let big = |seq| (pending(seq).0, MAX_BYTES / 2 + 1);
        feed.push(vec![big(10), big(11)]);
        assert_eq!(feed.epoch(), 2);
        assert_eq!(seqs(&feed.take(0, 10)), [11]);
    }
}
