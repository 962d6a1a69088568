//! Store tests on real SQLite files in temp dirs: the outbox order, reopen, idempotency windows,
//! fires once per instant across restarts, retained per key, history pruning and group commit.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::message::{Message, Recipient};

fn msg(hub: &str, to: Recipient, n: i64) -> Message {
    Message {
        hub: hub.into(),
        to,
        target: "statusUpdate".into(),
        arguments: vec![json!({ "n": n })],
        excluded: Vec::new(),
    }
}

fn new(id: &str, message: Message) -> NewMessage {
    NewMessage {
        id: id.into(),
        message,
        source: "route:status".into(),
        retain: None,
        for_acks: true,
    }
}

fn one(m: NewMessage) -> Accept {
    Accept {
        messages: vec![m],
        ..Accept::default()
    }
}

const KEEP: Option<HistoryPolicy> = Some(HistoryPolicy {
    keep: 100,
    max_age: Duration::from_secs(3600),
});

#[tokio::test]
async fn accepted_messages_wait_in_order_and_delivered_ones_move_to_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let a = store
        .accept(one(new("a", msg("Hub", Recipient::All, 1))))
        .await
        .unwrap();
    let b = store
        .accept(one(new(
            "b",
            msg("hub", Recipient::User("alice".into()), 2),
        )))
        .await
        .unwrap();
    let c = store
        .accept(one(new("c", msg("hub", Recipient::Group("ops".into()), 3))))
        .await
        .unwrap();
    let seqs: Vec<i64> = [a, b, c]
        .into_iter()
        .map(|x| match x {
            Accepted::Stored(s) => s[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let pending = store.pending(0, 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(store.outbox_stats().await.unwrap().depth, 3);
    for p in &pending {
        store.delivered([(p, KEEP)]).await.unwrap();
    }
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    // Group messages are not kept; the user message only for that user.
    let anyone = store.history("HUB", None, None, 10).await.unwrap().unwrap();
    assert_eq!(
        anyone.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let alice = store
        .history("hub", None, Some("alice".into()), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        alice.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let after_a = store
        .history("hub", Some("a".into()), Some("alice".into()), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after_a.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(after_a[0].arguments, vec![json!({"n": 2})]);
    assert!(
        store
            .history("hub", Some("zzz".into()), None, 10)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.history_len("hub").await.unwrap(), 2);
}

#[tokio::test]
async fn a_delivery_removes_many_at_once_and_a_repeat_adds_no_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    for (id, to) in [
        ("a", Recipient::All),
        ("g", Recipient::Group("ops".into())),
        ("u", Recipient::User("alice".into())),
    ] {
        store.accept(one(new(id, msg("Hub", to, 1)))).await.unwrap();
    }
    let pending = store.pending(0, 10).await.unwrap();
    store
        .delivered(pending.iter().map(|p| (p, KEEP)))
        .await
        .unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    // The group message left the outbox without entering history.
    assert_eq!(store.history_len("hub").await.unwrap(), 2);
    // Delivered again (a retry racing a restart): nothing is removed, nothing added.
    store
        .delivered(pending.iter().map(|p| (p, KEEP)))
        .await
        .unwrap();
    assert_eq!(store.history_len("hub").await.unwrap(), 2);
    // Without a policy a delivery only removes.
    store
        .accept(one(new("b", msg("hub", Recipient::All, 2))))
        .await
        .unwrap();
    let pending = store.pending(0, 10).await.unwrap();
    store.delivered([(&pending[0], None)]).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    assert_eq!(store.history_len("hub").await.unwrap(), 2);
    // Nothing to remove is no request at all.
    store.delivered([]).await.unwrap();
}

#[tokio::test]
async fn the_outbox_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        store
            .accept(one(new("a", msg("hub", Recipient::All, 1))))
            .await
            .unwrap();
    }
    let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    let pending = store.pending(0, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message, msg("hub", Recipient::All, 1));
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_answer_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let with_key = |id: &str, window: Duration| Accept {
        messages: vec![new(id, msg("hub", Recipient::All, 1))],
        idempotency: Some(Idempotency {
            scope: "route:status".into(),
            key: "k1".into(),
            answer: format!("{{\"id\":\"{id}\"}}"),
            window,
        }),
        fire: None,
    };
    let day = Duration::from_secs(86_400);
    assert!(matches!(
        store.accept(with_key("a", day)).await.unwrap(),
        Accepted::Stored(_)
    ));
    assert_eq!(
        store.accept(with_key("b", day)).await.unwrap(),
        Accepted::Repeat("{\"id\":\"a\"}".into())
    );
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        1,
        "the repeat stored nothing"
    );
    // Outside the window (zero), the key is new again.
    assert!(matches!(
        store.accept(with_key("c", Duration::ZERO)).await.unwrap(),
        Accepted::Stored(_)
    ));
}

#[tokio::test]
async fn a_fire_is_stored_once_per_instant_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let fire = |id: &str| Accept {
        messages: vec![new(id, msg("hub", Recipient::All, 1))],
        idempotency: None,
        fire: Some(Fire {
            schedule: "tick".into(),
            instant_ms: 1_700_000_000_000,
        }),
    };
    {
        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        assert!(matches!(
            store.accept(fire("a")).await.unwrap(),
            Accepted::Stored(_)
        ));
        assert_eq!(store.accept(fire("b")).await.unwrap(), Accepted::FireSeen);
    }
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert_eq!(store.accept(fire("c")).await.unwrap(), Accepted::FireSeen);
    assert_eq!(store.outbox_stats().await.unwrap().depth, 1);
}

#[tokio::test]
async fn retained_keeps_the_latest_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = |k: &str| RetainKey {
        source: "route:status".into(),
        key: k.into(),
    };
    {
        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        for (id, k, n) in [("a", "/db", 1), ("b", "/web", 2), ("c", "/db", 3)] {
            let mut m = new(id, msg("hub", Recipient::All, n));
            m.retain = Some(key(k));
            store.accept(one(m)).await.unwrap();
        }
    }
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let db = store.retained(key("/db")).await.unwrap().unwrap();
    assert_eq!(db.id, "c");
    assert_eq!(db.message.arguments, vec![json!({"n": 3})]);
    assert!(store.retained(key("/none")).await.unwrap().is_none());
    let all = store.retained_in_hub("HUB").await.unwrap();
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn history_is_pruned_to_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    let policy = Some(HistoryPolicy {
        keep: 3,
        max_age: Duration::from_secs(3600),
    });
    for n in 0..10 {
        store
            .accept(one(new(&format!("m{n}"), msg("hub", Recipient::All, n))))
            .await
            .unwrap();
    }
    for p in store.pending(0, 100).await.unwrap() {
        store.delivered([(&p, policy)]).await.unwrap();
    }
    let kept = store
        .history("hub", None, None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["m7", "m8", "m9"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_its_count_across_batches_and_a_reopen_and_drops_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let keep3 = Some(HistoryPolicy {
        keep: 3,
        max_age: Duration::from_secs(3600),
    });
    let ids = |store: Store| async move {
        store
            .history("hub", None, None, 100)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    {
        let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
        for n in 0..8 {
            store
                .accept(one(new(&format!("a{n}"), msg("hub", Recipient::All, n))))
                .await
                .unwrap();
        }
        // Delivered concurrently, so that several share a batch (and its prune).
        let pending = store.pending(0, 100).await.unwrap();
        let done: Vec<_> = pending
            .iter()
            .map(|p| store.delivered([(p, keep3)]))
            .collect();
        for result in futures_util::future::join_all(done).await {
            result.unwrap();
        }
        assert_eq!(ids(store.clone()).await, ["a5", "a6", "a7"]);
        assert_eq!(store.history_len("hub").await.unwrap(), 3);
    }
    // A new writer counts again from the table.
    let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    for n in 0..2 {
        store
            .accept(one(new(&format!("b{n}"), msg("hub", Recipient::All, n))))
            .await
            .unwrap();
    }
    for p in store.pending(0, 100).await.unwrap() {
        store.delivered([(&p, keep3)]).await.unwrap();
    }
    assert_eq!(ids(store.clone()).await, ["a7", "b0", "b1"]);

    // By age: what was accepted before `max_age` goes, the newer stays.
    let young = Some(HistoryPolicy {
        keep: 100,
        max_age: Duration::from_millis(300),
    });
    store
        .accept(one(new("old", msg("hub", Recipient::All, 0))))
        .await
        .unwrap();
    // Past the age, and past the writer's next age check (at most once a second per hub).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store
        .accept(one(new("new", msg("hub", Recipient::All, 1))))
        .await
        .unwrap();
    for p in store.pending(0, 100).await.unwrap() {
        store.delivered([(&p, young)]).await.unwrap();
    }
    assert_eq!(ids(store.clone()).await, ["new"]);
    assert_eq!(store.history_len("hub").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_are_committed_in_groups_and_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let tasks: Vec<_> = (0..400)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .accept(one(new(&format!("m{n}"), msg("hub", Recipient::All, n))))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), Accepted::Stored(_)));
    }
    assert_eq!(store.outbox_stats().await.unwrap().depth, 400);
    // A duplicate id fails alone, without failing its batch.
    let dup = store
        .accept(one(new("m1", msg("hub", Recipient::All, 1))))
        .await;
    assert!(matches!(dup, Err(StoreError::Sql(_))), "{dup:?}");
    assert!(matches!(
        store
            .accept(one(new("fresh", msg("hub", Recipient::All, 1))))
            .await
            .unwrap(),
        Accepted::Stored(_)
    ));
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), vec![0x42u8; 8192]).unwrap();
    let e = Store::open(dir.path(), Synchronous::Full).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(FILE_NAME), "{text}");
    assert!(
        matches!(e, StoreError::Unusable { .. } | StoreError::Open { .. }),
        "{e:?}"
    );
}

#[test]
fn a_state_directory_that_cannot_be_created_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let e = Store::open(&blocker.join("sub"), Synchronous::Full).unwrap_err();
    assert!(e.to_string().contains("sub"), "{e}");
}

#[tokio::test]
async fn acks_are_recorded_once_per_connection_for_known_messages_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    store
        .accept(one(new("m1", msg("Notifications", Recipient::All, 1))))
        .await
        .unwrap();
    let ack = |connection: &str, user: Option<&str>| NewAck {
        id: "m1".into(),
        connection: connection.into(),
        user: user.map(str::to_string),
    };
    let first = store.ack(ack("c1", Some("alice"))).await.unwrap();
    assert_eq!(
        first,
        AckOutcome::Recorded {
            hub: "Notifications".into(),
            source: "route:status".into(),
            first: true
        }
    );
    let again = store.ack(ack("c1", Some("alice"))).await.unwrap();
    assert!(matches!(again, AckOutcome::Recorded { first: false, .. }));
    store.ack(ack("c2", None)).await.unwrap();
    let unknown = store
        .ack(NewAck {
            id: "nope".into(),
            connection: "c1".into(),
            user: None,
        })
        .await
        .unwrap();
    assert_eq!(unknown, AckOutcome::UnknownMessage);
    // A message of a hub without an `ack` method is not recorded for acknowledgements.
    store
        .accept(one(NewMessage {
            for_acks: false,
            ..new("quiet", msg("Other", Recipient::All, 1))
        }))
        .await
        .unwrap();
    let quiet = store
        .ack(NewAck {
            id: "quiet".into(),
            connection: "c1".into(),
            user: None,
        })
        .await
        .unwrap();
    assert_eq!(quiet, AckOutcome::UnknownMessage);
    assert!(store.acks("quiet").await.unwrap().is_none());
    assert_eq!(store.pending(0, 10).await.unwrap().len(), 2, "still sent");

    let acks = store.acks("m1").await.unwrap().unwrap();
    assert_eq!(acks.hub, "Notifications");
    assert_eq!(acks.acks.len(), 2, "{acks:?}");
    let conns: Vec<&str> = acks.acks.iter().map(|a| a.connection.as_str()).collect();
    assert!(conns.contains(&"c1") && conns.contains(&"c2"));
    let alice = acks.acks.iter().find(|a| a.connection == "c1").unwrap();
    assert_eq!(alice.user.as_deref(), Some("alice"));
    assert!(store.acks("nope").await.unwrap().is_none());
    // Still there after a reopen (durable).
    drop(store);
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert_eq!(store.acks("m1").await.unwrap().unwrap().acks.len(), 2);
}

#[test]
fn a_retained_status_is_visible_to_everyone_or_only_its_user() {
    let r = |to: Recipient| Retained {
        id: "r".into(),
        time_ms: 0,
        message: msg("hub", to, 1),
    };
    assert!(r(Recipient::All).visible_to(None));
    assert!(r(Recipient::All).visible_to(Some("bob")));
    let alice = r(Recipient::User("alice".into()));
    assert!(alice.visible_to(Some("alice")));
    assert!(!alice.visible_to(Some("bob")));
    assert!(!alice.visible_to(None));
    assert!(!r(Recipient::Group("ops".into())).visible_to(Some("alice")));
    assert!(!r(Recipient::Connection("c1".into())).visible_to(Some("alice")));
    assert_eq!(
        r(Recipient::All).to_json(),
        json!({"id": "r", "time": "1970-01-01T00:00:00.000Z", "target": "statusUpdate", "arguments": [{"n": 1}]})
    );
}
