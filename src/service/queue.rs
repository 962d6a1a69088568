//! The bounded outbound queue of one connection: fan-out pushes without waiting, the
//! connection's transport takes.
//!
//! A slot and a `VecDeque` behind a std `Mutex`, with an `AtomicWaker` for the consumer,
//! rather than a `tokio::sync::mpsc` channel: tokio's channel allocates a block of 32 slots
//! and its cache-padded state up front (about 3.4 KiB per connection), while most
//! connections are idle. Here the oldest item sits in the slot, so a quiet connection (one
//! frame at a time, the usual case) never allocates; only a backlog fills the `VecDeque`,
//! which gives its room back once drained. One consumer at a time (the transport holding
//! [`Connection::outbound`](super::connection)); the lock is held for a push or a pop,
//! never across an `.await`.
//!
//! The queue also tells its consumer when to stop: [`Sender::close`] (the connection is
//! closing) and [`Sender::interrupt`] (a newer WebSocket takes the connection over) make
//! `recv` answer `None`, so a writer needs no other wake-up source on its hot path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use futures_util::task::AtomicWaker;

use super::connection::Outgoing;

/// [`Sender::try_push_quiet`] did not queue an item: the queue holds its limit of items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// The queued items, oldest first: `first`, then `rest` (which is empty while `first` is).
#[derive(Default)]
struct Items {
    first: Option<Outgoing>,
    rest: VecDeque<Outgoing>,
}

impl Items {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn push(&mut self, item: Outgoing) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    fn pop(&mut self) -> Option<Outgoing> {
        let item = self.first.take().or_else(|| self.rest.pop_front());
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            // `shrink_to(0)` frees the buffer.
            self.rest.shrink_to(0);
        }
        item
    }
}

struct Shared {
    items: Mutex<Items>,
    /// The consumer waiting in `recv`: woken by `close` and `interrupt`, and handed by each
    /// push to its caller, who wakes it.
    waker: AtomicWaker,
    limit: usize,
    /// Set by `close`: `recv` answers `None` from then on (what is left stays for
    /// `try_recv`, the final flush).
    closed: AtomicBool,
    /// Raised by `interrupt`: the next `recv` answers `None` once.
    interrupts: AtomicU64,
}

/// The producer side (fan-out, keep-alive, Completions): never waits.
#[derive(Clone)]
pub(crate) struct Sender(Arc<Shared>);

/// The consumer side, held by one transport at a time.
pub(crate) struct Receiver {
    shared: Arc<Shared>,
    /// The interrupts already answered.
    seen: u64,
}

/// A queue of at most `limit` items (at least one).
pub(crate) fn bounded(limit: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        items: Mutex::new(Items::default()),
        waker: AtomicWaker::new(),
        limit: limit.max(1),
        closed: AtomicBool::new(false),
        interrupts: AtomicU64::new(0),
    });
    let rx = Receiver {
        shared: shared.clone(),
        seen: 0,
    };
    (Sender(shared), rx)
}

impl Shared {
    fn items(&self) -> MutexGuard<'_, Items> {
        // A poisoned lock only means a panic elsewhere mid-push of plain data.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sender {
    /// Queue `item` unless the queue is full, without waking the consumer: its waker, if it
    /// waits, is handed back for the caller to wake soon (fan-out wakes its recipients in
    /// chunks). Until then later pushes wake nobody, so the consumer sees them all at once.
    pub(crate) fn try_push_quiet(&self, item: Outgoing) -> Result<Option<Waker>, Full> {
        {
            let mut items = self.0.items();
            if items.len() >= self.0.limit {
                return Err(Full);
            }
            items.push(item);
        }
        Ok(self.0.waker.take())
    }

    /// Start loading the queue's memory (see `fanout::prefetch`).
    #[inline]
    pub(crate) fn prefetch(&self) {
        super::fanout::prefetch(Arc::as_ptr(&self.0));
    }

    /// The connection is closing: `recv` answers `None` from now on.
    pub(crate) fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// Make the consumer's next `recv` answer `None` (it should look why).
    pub(crate) fn interrupt(&self) {
        self.0.interrupts.fetch_add(1, Ordering::AcqRel);
        self.0.waker.wake();
    }
}

impl Receiver {
    /// The next item, waiting for one; `None` once the queue is closed, or once after an
    /// interrupt. Cancel-safe: nothing is taken unless returned.
    pub(crate) async fn recv(&mut self) -> Option<Outgoing> {
        std::future::poll_fn(|cx| {
            if let Some(answer) = self.answer_now() {
                return Poll::Ready(answer);
            }
            self.shared.waker.register(cx.waker());
            // What came between the look above and the registration is seen here.
            match self.answer_now() {
                Some(answer) => Poll::Ready(answer),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// What `recv` answers now, if it need not wait.
    fn answer_now(&mut self) -> Option<Option<Outgoing>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Some(None);
        }
        let interrupts = self.shared.interrupts.load(Ordering::Acquire);
        if interrupts != self.seen {
            self.seen = interrupts;
            return Some(None);
        }
        self.try_recv().map(Some)
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Outgoing> {
        self.shared.items().pop()
    }

    /// Items queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.items().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::service::connection::Frame;

    fn item(text: &str) -> Outgoing {
        Outgoing::tracked(Frame::new(None, text.as_bytes().to_vec()))
    }

    fn text(item: &Outgoing) -> &[u8] {
        item.frame.as_bytes()
    }

    /// Queue `item` and wake the consumer, as `Connection::try_push` does.
    fn push(tx: &Sender, item: Outgoing) -> Result<(), Full> {
        if let Some(waker) = tx.try_push_quiet(item)? {
            waker.wake();
        }
        Ok(())
    }

    #[tokio::test]
    async fn keeps_order_refuses_past_the_limit_and_gives_room_back() {
        let (tx, mut rx) = bounded(20);
        for i in 0..20 {
            push(&tx, item(&i.to_string())).expect("room");
        }
        assert_eq!(push(&tx, item("x")), Err(Full));
        assert_eq!(rx.len(), 20);
        for i in 0..20 {
            let got = rx.recv().await.expect("an item");
            assert_eq!(text(&got), i.to_string().as_bytes());
        }
        assert!(rx.try_recv().is_none());
        assert_eq!(
            rx.shared.items().rest.capacity(),
            0,
            "an empty queue holds no buffer"
        );
        push(&tx, item("again")).expect("room after draining");
        assert_eq!(
            rx.shared.items().rest.capacity(),
            0,
            "one item at a time needs no buffer"
        );
        push(&tx, item("and again")).expect("room");
        assert_eq!(text(&rx.recv().await.expect("an item")), b"again");
        push(&tx, item("last")).expect("room");
        assert_eq!(text(&rx.recv().await.expect("an item")), b"and again");
        assert_eq!(text(&rx.recv().await.expect("an item")), b"last");
        assert_eq!(rx.len(), 0);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_consumer_and_a_dropped_wait_loses_nothing() {
        let (tx, mut rx) = bounded(4);
        // A wait given up before anything arrived takes nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), rx.recv())
                .await
                .is_err()
        );
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await.expect("first");
            let second = rx.recv().await.expect("second");
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        push(&tx, item("a")).expect("room");
        push(&tx, item("b")).expect("room");
        let (first, second) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!((text(&first), text(&second)), (&b"a"[..], &b"b"[..]));
    }

    #[tokio::test]
    async fn a_quiet_push_hands_the_waker_back_instead_of_waking() {
        let (tx, mut rx) = bounded(4);
        assert!(
            tx.try_push_quiet(item("a")).expect("room").is_none(),
            "nobody waits yet"
        );
        assert_eq!(
            rx.recv().await.map(|i| text(&i).to_vec()),
            Some(b"a".to_vec())
        );
        let waiter = tokio::spawn(async move { rx.recv().await.map(|i| text(&i).to_vec()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waker = tx
            .try_push_quiet(item("b"))
            .expect("room")
            .expect("the consumer waits");
        assert!(
            tx.try_push_quiet(item("c")).expect("room").is_none(),
            "its waker was handed out once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "not woken by a quiet push");
        waker.wake();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, Some(b"b".to_vec()));
        // "c" is still queued: three more fill the queue, and a full queue refuses as before.
        for more in ["d", "e", "f"] {
            assert!(tx.try_push_quiet(item(more)).is_ok());
        }
        assert!(matches!(tx.try_push_quiet(item("g")), Err(Full)));
    }

    #[tokio::test]
    async fn close_and_interrupt_answer_none() {
        let (tx, mut rx) = bounded(4);
        tx.interrupt();
        assert!(rx.recv().await.is_none(), "once after an interrupt");
        push(&tx, item("a")).expect("room");
        assert_eq!(
            rx.recv().await.map(|i| text(&i).to_vec()),
            Some(b"a".to_vec())
        );
        push(&tx, item("b")).expect("room");
        tx.close();
        assert!(rx.recv().await.is_none(), "closed");
        assert!(rx.recv().await.is_none(), "still closed");
        // What was queued stays for the final flush.
        assert_eq!(
            rx.try_recv().map(|i| text(&i).to_vec()),
            Some(b"b".to_vec())
        );

        // A consumer already waiting is woken by either.
        for interrupt in [true, false] {
            let (tx, mut rx) = bounded(4);
            let waiter = tokio::spawn(async move { rx.recv().await.is_none() });
            tokio::time::sleep(Duration::from_millis(20)).await;
            if interrupt {
                tx.interrupt();
            } else {
                tx.close();
            }
            let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("task");
            assert!(woken);
        }
    }
}
