//! A gate in front of a socket's read half, for a task that also waits on other things (the
//! WebSocket loop waits on the socket and on its outbound queue). A task woken for outbound
//! messages would otherwise poll the read side on every wake, only to hear "nothing yet";
//! the gate polls it only after the read side itself woke the task, or after it last
//! returned something.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt};

/// See the module docs. One per socket; cheap (one small allocation).
#[derive(Debug)]
pub(super) struct ReadGate(Arc<Flag>);

#[derive(Debug)]
struct Flag {
    /// The read side may have something: it woke, or it has not answered Pending since.
    ready: AtomicBool,
    /// The task to wake when the read side does.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl ReadGate {
    pub(super) fn new() -> ReadGate {
        ReadGate(Arc::new(Flag {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }))
    }

    /// `stream.poll_next`, skipped (Pending) while the read side has not woken since it last
    /// answered Pending. The read side is polled with the gate's waker, which opens the gate
    /// and wakes this task.
    pub(super) fn poll_next<S: Stream + Unpin>(
        &self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Option<S::Item>> {
        self.0.task.register(cx.waker());
        if !self.0.ready.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.0.clone());
        match stream.poll_next_unpin(&mut Context::from_waker(&waker)) {
            Poll::Ready(item) => {
                // More may be buffered: look again next time.
                self.0.ready.store(true, Ordering::Release);
                Poll::Ready(item)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::poll_fn;

    #[tokio::test]
    async fn polls_the_read_side_only_after_it_woke() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        // The read side, counting the polls that reach it.
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let mut stream = futures_util::stream::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            rx.poll_recv(cx)
        });
        let gate = ReadGate::new();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(gate.poll_next(&mut stream, &mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Not woken since: the read side is not polled again.
        assert!(gate.poll_next(&mut stream, &mut cx).is_pending());
        assert!(gate.poll_next(&mut stream, &mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // An item wakes it; the gate opens, and stays open after a Ready.
        tx.send(7).unwrap();
        tx.send(8).unwrap();
        assert_eq!(gate.poll_next(&mut stream, &mut cx), Poll::Ready(Some(7)));
        assert_eq!(gate.poll_next(&mut stream, &mut cx), Poll::Ready(Some(8)));
        assert!(gate.poll_next(&mut stream, &mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 4);
        // The waiting task is woken through the gate when the read side wakes.
        let woke = tokio::spawn(async move { poll_fn(|cx| gate.poll_next(&mut stream, cx)).await });
        tokio::task::yield_now().await;
        tx.send(9).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), woke).await;
        assert_eq!(got.unwrap().unwrap(), Some(9));
    }
}
