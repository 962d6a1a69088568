//! `LiveConfig`: the current `Config` snapshot, swapped atomically on reload. Readers take an
//! `Arc<Config>` per request or per tick and keep it for that unit of work, so in-flight work
//! finishes on the snapshot it started with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::Config;

/// Shared handle to the live configuration. Cheap to clone.
#[derive(Clone)]
pub struct LiveConfig {
    inner: Arc<Inner>,
}

struct Inner {
    /// `ArcSwap`: lock-free reads on every request; a reload stores a new `Arc` in one step.
    current: ArcSwap<Config>,
    /// Generation of `current`; starts at 1 and rises by one per accepted reload.
    generation: AtomicU64,
    /// Tells waiters (the scheduler) that a new snapshot was stored: the value is the
    /// generation. `watch` keeps only the latest value, which is all a waiter needs.
    changed: watch::Sender<u64>,
}

impl LiveConfig {
    /// Start with `config` as generation 1.
    pub fn new(config: Config) -> Self {
        let (changed, _) = watch::channel(1);
        LiveConfig {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(config),
                generation: AtomicU64::new(1),
                changed,
            }),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Config> {
        self.inner.current.load_full()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Store a new snapshot; returns its generation.
    pub fn replace(&self, config: Config) -> u64 {
        self.inner.current.store(Arc::new(config));
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.changed.send_replace(generation);
        generation
    }

    /// A receiver that wakes when a new snapshot is stored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}
