//! The store's syncer: a thread that takes the write-ahead log to disk behind the writer and
//! only then answers the callers who were promised durability (an accepted message, a
//! recorded acknowledgement). The writer commits without a sync of its own and hands its
//! promises here and gives the new messages to the outbox at once, so a disk that stalls
//! delays only the 202s, neither the deliveries nor the commits behind them. One sync covers
//! every commit written before it, so the promises queued behind a sync are all answered by
//! the next one.
//!
//! The log is synced through a file handle of its own: `fdatasync` flushes a file's data
//! whichever descriptor wrote it, so this is the sync SQLite's `FULL` level runs inside each
//! commit, moved off the writer's thread. (SQLite still syncs the log itself before each
//! checkpoint and when it starts reusing it.) After a failed sync the kernel may have given
//! up on the unwritten pages, so no later sync can vouch for them: the syncer then breaks the
//! store, which refuses every write until herald is restarted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};

use super::StoreError;
use super::writer::Answer;

/// Most commits waiting for a sync; the writer waits beyond that (backpressure).
const QUEUE: usize = 64;

/// Takes what was written so far to disk.
pub(super) type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// Why the store refuses every write, once a sync failed.
pub(super) type Broken = Arc<OnceLock<String>>;

/// The sync of `db`'s write-ahead log (`<db>-wal`, SQLite's name for it), opened on first use:
/// it exists once the database has been written in WAL mode, which opening it does.
pub(super) fn wal_of(db: &Path) -> SyncFn {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let mut file: Option<File> = None;
    Box::new(move || {
        let f = match &file {
            Some(f) => f,
            None => file.insert(File::open(&wal)?),
        };
        f.sync_data()
    })
}

/// The writer's side of the syncer: it queues each commit's promises.
pub(super) struct Syncer {
    tx: SyncSender<Vec<Answer>>,
}

impl Syncer {
    /// Queue a commit's promises, waiting while [`QUEUE`] commits already wait for a sync.
    /// Without a sync thread the promises come back.
    pub(super) fn promise(&self, owed: Vec<Answer>) -> Result<(), Vec<Answer>> {
        self.tx.send(owed).map_err(|unsent| unsent.0)
    }
}

/// Start the syncer; the writer sends it each commit's promised answers.
pub(super) fn spawn(sync: SyncFn, path: PathBuf, broken: Broken) -> Result<Syncer, StoreError> {
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("herald-sync".into())
        .spawn(move || run(sync, &rx, &path, &broken))
        .map_err(|e| StoreError::Unusable {
            path: PathBuf::new(),
            detail: format!("cannot start the sync thread: {e}"),
        })?;
    Ok(Syncer { tx })
}

/// Sync and answer until the writer is gone.
fn run(mut sync: SyncFn, rx: &Receiver<Vec<Answer>>, path: &Path, broken: &OnceLock<String>) {
    while let Ok(mut owed) = rx.recv() {
        // Everything queued meanwhile was written before this sync: it covers them too.
        while let Ok(more) = rx.try_recv() {
            owed.extend(more);
        }
        let result = match broken.get() {
            Some(why) => Err(why.clone()),
            None => sync().map_err(|e| {
                let why = format!(
                    "its write-ahead log could not be synced to disk ({e}); herald stores \
                     nothing more until it is restarted"
                );
                tracing::error!(path = %path.display(), error = %e, "state database sync failed: refusing every write until restart");
                broken.get_or_init(|| why).clone()
            }),
        };
        for answer in owed {
            answer.send(&result, path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    fn owed() -> (Vec<Answer>, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (vec![Answer::Unit(reply, Ok(()))], answer)
    }

    #[test]
    fn the_log_it_syncs_is_the_one_sqlite_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("s.db");
        let conn = super::super::schema::open(&db).expect("open");
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        let wal = dir.path().join("s.db-wal");
        assert!(std::fs::metadata(&wal).expect("the log").len() > 0);
        wal_of(&db)().expect("synced");
        // No log, no promise: the error reaches the caller.
        assert!(wal_of(&dir.path().join("none.db"))().is_err());
    }

    #[test]
    fn promises_are_answered_after_a_sync_and_one_sync_serves_all_queued() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let counted = syncs.clone();
        let sync: SyncFn = Box::new(move || {
            gate_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(std::io::Error::other)?;
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let syncer = spawn(sync, PathBuf::from("s.db"), Broken::default()).expect("spawn");
        let (first, mut first_answer) = owed();
        syncer.promise(first).expect("send");
        // Held while the disk is busy.
        std::thread::sleep(Duration::from_millis(50));
        assert!(first_answer.try_recv().is_err());
        let (second, second_answer) = owed();
        let (third, third_answer) = owed();
        syncer.promise(second).expect("send");
        syncer.promise(third).expect("send");
        gate_tx.send(()).expect("release");
        first_answer
            .blocking_recv()
            .expect("answer")
            .expect("synced");
        // The second and third waited behind the first sync; the next one answers both.
        gate_tx.send(()).expect("release");
        second_answer
            .blocking_recv()
            .expect("answer")
            .expect("synced");
        third_answer
            .blocking_recv()
            .expect("answer")
            .expect("synced");
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_sync_breaks_the_store_for_good() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let sync: SyncFn = Box::new(move || {
            // Fails once, then "succeeds": the second success must not be believed.
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(std::io::Error::from_raw_os_error(5))
            } else {
                Ok(())
            }
        });
        let broken = Broken::default();
        let syncer = spawn(sync, PathBuf::from("s.db"), broken.clone()).expect("spawn");
        for _ in 0..2 {
            let (promise, answer) = owed();
            syncer.promise(promise).expect("send");
            let e = answer
                .blocking_recv()
                .expect("answer")
                .expect_err("refused");
            let text = e.to_string();
            assert!(text.contains("could not be synced"), "{text}");
            assert!(text.contains("until it is restarted"), "{text}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no second sync is trusted");
        assert!(broken.get().is_some());
    }
}
