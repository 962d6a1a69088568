//! Connections, users and groups of every hub, as two-way maps; std `RwLock`, never held
//! across `.await`.
//!
//! Two kinds of group membership exist, as in Azure: a *connection* joins a group (it leaves
//! when it disconnects), and a *user* joins a group (with an expiry; it applies to the user's
//! current and future connections). A group send reaches the union of both.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::connection::Connection;
use super::metrics as service_metrics;
use super::{Shared, hub_key};
use crate::message::Recipient;

/// A user-group membership without `ttl` lasts at most this long (Azure: one year).
const MAX_MEMBERSHIP: Duration = Duration::from_secs(365 * 24 * 3600);

/// Among memberships without `ttl`, only this many per user are kept (the latest ones).
const MAX_UNTIMED_GROUPS_PER_USER: usize = 100;

/// How often expired user-group memberships are dropped (lookups ignore them anyway).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Why a connection could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RegistryError {
    #[error("the service has reached its limit of {0} connections")]
    Full(usize),
}

/// The registry. One std `RwLock` over all tables: every operation is a few hash-map
/// lookups with no I/O, so a blocking lock held for microseconds is cheaper than an async
/// one, and it is never held across `.await` (no method here is async). Fan-out takes the
/// read lock only to collect `Arc<Connection>`s and encodes and queues after releasing it.
pub(crate) struct Registry {
    tables: RwLock<Tables>,
    max_connections: usize,
}

#[derive(Default)]
struct Tables {
    /// Every live connection by its connection token (the transports' `id`), including
    /// negotiated ones whose handshake has not completed.
    by_token: HashMap<String, Arc<Connection>>,
    /// Per lowercased hub name.
    hubs: HashMap<String, Hub>,
    /// Orders user-group memberships without `ttl` (to keep only the latest 100).
    next_seq: u64,
}

#[derive(Default)]
struct Hub {
    /// Connections that completed the handshake, by connection id.
    connections: HashMap<String, Arc<Connection>>,
    /// User id → its connection ids.
    users: HashMap<String, HashSet<String>>,
    /// Group → connection ids that joined it as connections.
    groups: HashMap<String, HashSet<String>>,
    /// Connection id → groups it joined (the reverse of `groups`).
    connection_groups: HashMap<String, HashSet<String>>,
    /// User id → group → membership.
    user_groups: HashMap<String, HashMap<String, Membership>>,
    /// Group → user ids with a membership (the reverse of `user_groups`).
    group_users: HashMap<String, HashSet<String>>,
}

#[derive(Debug, Clone, Copy)]
struct Membership {
    expires: Instant,
    /// Set for memberships joined without `ttl` (insertion order).
    untimed_seq: Option<u64>,
}

impl Hub {
    fn is_empty(&self) -> bool {
        self.connections.is_empty()
            && self.users.is_empty()
            && self.groups.is_empty()
            && self.user_groups.is_empty()
    }

    fn user_member(&self, user: &str, group: &str, now: Instant) -> bool {
        self.user_groups
            .get(user)
            .and_then(|g| g.get(group))
            .is_some_and(|m| m.expires > now)
    }

    /// Connection ids of a group: joined connections plus connections of member users.
    fn group_connection_ids(&self, group: &str, now: Instant) -> HashSet<&str> {
        let mut ids: HashSet<&str> = self
            .groups
            .get(group)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some(users) = self.group_users.get(group) {
            for user in users {
                if self.user_member(user, group, now)
                    && let Some(conns) = self.users.get(user)
                {
                    ids.extend(conns.iter().map(String::as_str));
                }
            }
        }
        ids
    }

    fn join(&mut self, group: &str, connection_id: &str) {
        self.groups
            .entry(group.to_string())
            .or_default()
            .insert(connection_id.to_string());
        self.connection_groups
            .entry(connection_id.to_string())
            .or_default()
            .insert(group.to_string());
    }

    fn leave(&mut self, group: &str, connection_id: &str) {
        if let Some(set) = self.groups.get_mut(group) {
            set.remove(connection_id);
            if set.is_empty() {
                self.groups.remove(group);
            }
        }
        if let Some(set) = self.connection_groups.get_mut(connection_id) {
            set.remove(group);
            if set.is_empty() {
                self.connection_groups.remove(connection_id);
            }
        }
    }

    fn drop_user_membership(&mut self, user: &str, group: &str) {
        if let Some(groups) = self.user_groups.get_mut(user) {
            groups.remove(group);
            if groups.is_empty() {
                self.user_groups.remove(user);
            }
        }
        if let Some(users) = self.group_users.get_mut(group) {
            users.remove(user);
            if users.is_empty() {
                self.group_users.remove(group);
            }
        }
    }

    fn user_connection_ids(&self, user: &str) -> Vec<String> {
        self.users
            .get(user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<(String, String)> = self
            .user_groups
            .iter()
            .flat_map(|(user, groups)| {
                groups
                    .iter()
                    .filter(|(_, m)| m.expires <= now)
                    .map(|(g, _)| (user.clone(), g.clone()))
            })
            .collect();
        for (user, group) in expired {
            self.drop_user_membership(&user, &group);
        }
    }
}

impl Registry {
    pub(crate) fn new(max_connections: usize) -> Self {
        Registry {
            tables: RwLock::new(Tables::default()),
            max_connections,
        }
    }

    // A poisoned lock only means another thread panicked mid-update of plain maps; the maps
    // are still usable, so recover instead of spreading the panic.
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a new (negotiated or negotiate-less) connection under its token.
    pub(crate) fn insert(&self, connection: Arc<Connection>) -> Result<(), RegistryError> {
        let mut t = self.write();
        if t.by_token.len() >= self.max_connections {
            return Err(RegistryError::Full(self.max_connections));
        }
        t.by_token.insert(connection.token.clone(), connection);
        Ok(())
    }

    /// The live connection whose transport `id` is `token`.
    pub(crate) fn by_token(&self, token: &str) -> Option<Arc<Connection>> {
        self.read().by_token.get(token).cloned()
    }

    /// The handshake completed: the connection now receives sends, and joins the groups its
    /// user is a member of.
    pub(crate) fn activate(&self, connection: &Arc<Connection>) {
        let mut t = self.write();
        let hub = t.hubs.entry(connection.hub.clone()).or_default();
        hub.connections
            .insert(connection.id.clone(), connection.clone());
        if let Some(user) = &connection.user {
            hub.users
                .entry(user.clone())
                .or_default()
                .insert(connection.id.clone());
        }
        let count = t.hubs.values().map(|h| h.connections.len()).sum::<usize>();
        drop(t);
        metrics::gauge!(service_metrics::CONNECTIONS).set(count as f64);
        metrics::gauge!(service_metrics::CONNECTIONS_BY_HUB, "hub" => connection.hub.clone(), "transport" => connection.transport_name())
            .increment(1.0);
    }

    /// Stop delivering to the connection and drop its group memberships (user memberships
    /// stay: they apply to the user's future connections).
    pub(crate) fn deactivate(&self, connection: &Connection) {
        // Read before taking the registry lock: never hold both.
        let transport = connection.transport_name();
        let mut t = self.write();
        let key = connection.hub.clone();
        if let Some(hub) = t.hubs.get_mut(&key) {
            if hub.connections.remove(&connection.id).is_some() {
                metrics::gauge!(service_metrics::CONNECTIONS_BY_HUB, "hub" => key.clone(), "transport" => transport)
                    .decrement(1.0);
                if let Some(user) = &connection.user
                    && let Some(set) = hub.users.get_mut(user)
                {
                    set.remove(&connection.id);
                    if set.is_empty() {
                        hub.users.remove(user);
                    }
                }
                let groups = hub
                    .connection_groups
                    .remove(&connection.id)
                    .unwrap_or_default();
                for group in groups {
                    if let Some(set) = hub.groups.get_mut(&group) {
                        set.remove(&connection.id);
                        if set.is_empty() {
                            hub.groups.remove(&group);
                        }
                    }
                }
            }
            if hub.is_empty() {
                t.hubs.remove(&key);
            }
        }
        let count = t.hubs.values().map(|h| h.connections.len()).sum::<usize>();
        metrics::gauge!(service_metrics::CONNECTIONS).set(count as f64);
    }

    /// Forget the connection's token (after [`Registry::deactivate`]).
    pub(crate) fn forget(&self, connection: &Connection) {
        let mut t = self.write();
        if t.by_token
            .get(&connection.token)
            .is_some_and(|c| std::ptr::eq(c.as_ref(), connection))
        {
            t.by_token.remove(&connection.token);
        }
    }

    /// A hub's live connections, its users with a connection, and its groups with one.
    /// The connections are returned (not inspected) so that their own locks are never taken
    /// under the registry's.
    pub(crate) fn presence(&self, hub: &str) -> (Vec<Arc<Connection>>, usize, usize) {
        let t = self.read();
        match t.hubs.get(&hub_key(hub)) {
            Some(h) => (
                h.connections.values().cloned().collect(),
                h.users.len(),
                h.groups.len(),
            ),
            None => (Vec::new(), 0, 0),
        }
    }

    /// Per lowercased hub with a connection: (hub, connections, distinct users).
    pub(crate) fn hub_counts(&self) -> Vec<(String, usize, usize)> {
        self.read()
            .hubs
            .iter()
            .filter(|(_, h)| !h.connections.is_empty())
            .map(|(name, h)| (name.clone(), h.connections.len(), h.users.len()))
            .collect()
    }

    /// Connected connections, over all hubs.
    pub(crate) fn connected_count(&self) -> usize {
        self.read().hubs.values().map(|h| h.connections.len()).sum()
    }

    /// The connections `to` names in `hub`, minus `excluded` (hub and group sends only, as
    /// in the REST API; user and connection sends ignore it).
    pub(crate) fn resolve(
        &self,
        hub: &str,
        to: &Recipient,
        excluded: &[String],
    ) -> Vec<Arc<Connection>> {
        let now = Instant::now();
        let t = self.read();
        let Some(hub) = t.hubs.get(&hub_key(hub)) else {
            return Vec::new();
        };
        let not_excluded = |id: &str| !excluded.iter().any(|e| e == id);
        match to {
            Recipient::All => hub
                .connections
                .values()
                .filter(|c| not_excluded(&c.id))
                .cloned()
                .collect(),
            Recipient::User(user) => hub
                .users
                .get(user)
                .into_iter()
                .flatten()
                .filter_map(|id| hub.connections.get(id).cloned())
                .collect(),
            Recipient::Group(group) => hub
                .group_connection_ids(group, now)
                .into_iter()
                .filter(|id| not_excluded(id))
                .filter_map(|id| hub.connections.get(id).cloned())
                .collect(),
            Recipient::Connection(id) => hub.connections.get(id).cloned().into_iter().collect(),
        }
    }

    /// The connected connection `id` of `hub`.
    pub(crate) fn connection(&self, hub: &str, id: &str) -> Option<Arc<Connection>> {
        self.read()
            .hubs
            .get(&hub_key(hub))
            .and_then(|h| h.connections.get(id).cloned())
    }

    pub(crate) fn user_exists(&self, hub: &str, user: &str) -> bool {
        self.read()
            .hubs
            .get(&hub_key(hub))
            .is_some_and(|h| h.users.get(user).is_some_and(|s| !s.is_empty()))
    }

    pub(crate) fn group_exists(&self, hub: &str, group: &str) -> bool {
        let now = Instant::now();
        self.read().hubs.get(&hub_key(hub)).is_some_and(|h| {
            h.group_connection_ids(group, now)
                .into_iter()
                .any(|id| h.connections.contains_key(id))
        })
    }

    pub(crate) fn user_in_group(&self, hub: &str, group: &str, user: &str) -> bool {
        let now = Instant::now();
        self.read().hubs.get(&hub_key(hub)).is_some_and(|h| {
            h.user_member(user, group, now)
                || h.users.get(user).is_some_and(|conns| {
                    h.groups
                        .get(group)
                        .is_some_and(|members| conns.iter().any(|c| members.contains(c)))
                })
        })
    }

    pub(crate) fn add_connection_to_group(&self, hub: &str, group: &str, id: &str) -> bool {
        let mut t = self.write();
        match t.hubs.get_mut(&hub_key(hub)) {
            Some(h) if h.connections.contains_key(id) => {
                h.join(group, id);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn remove_connection_from_group(&self, hub: &str, group: &str, id: &str) -> bool {
        let mut t = self.write();
        match t.hubs.get_mut(&hub_key(hub)) {
            Some(h) if h.connections.contains_key(id) => {
                h.leave(group, id);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn remove_connection_from_all_groups(&self, hub: &str, id: &str) -> bool {
        let mut t = self.write();
        match t.hubs.get_mut(&hub_key(hub)) {
            Some(h) if h.connections.contains_key(id) => {
                for group in h.connection_groups.remove(id).unwrap_or_default() {
                    h.leave(&group, id);
                }
                true
            }
            _ => false,
        }
    }

    pub(crate) fn add_user_to_group(
        &self,
        hub: &str,
        group: &str,
        user: &str,
        ttl: Option<Duration>,
    ) {
        let now = Instant::now();
        let mut t = self.write();
        let seq = t.next_seq;
        t.next_seq += 1;
        let h = t.hubs.entry(hub_key(hub)).or_default();
        match ttl {
            Some(ttl) if ttl.is_zero() => {
                // Azure: ttl=0 adds only the user's connections of this moment.
                for id in h.user_connection_ids(user) {
                    h.join(group, &id);
                }
                if h.is_empty() {
                    t.hubs.remove(&hub_key(hub));
                }
                return;
            }
            Some(ttl) => {
                let membership = Membership {
                    expires: now + ttl.min(MAX_MEMBERSHIP),
                    untimed_seq: None,
                };
                h.user_groups
                    .entry(user.to_string())
                    .or_default()
                    .insert(group.to_string(), membership);
            }
            None => {
                let groups = h.user_groups.entry(user.to_string()).or_default();
                groups.insert(
                    group.to_string(),
                    Membership {
                        expires: now + MAX_MEMBERSHIP,
                        untimed_seq: Some(seq),
                    },
                );
                let untimed = groups.values().filter(|m| m.untimed_seq.is_some()).count();
                let oldest = (untimed > MAX_UNTIMED_GROUPS_PER_USER)
                    .then(|| {
                        groups
                            .iter()
                            .filter_map(|(g, m)| m.untimed_seq.map(|s| (s, g.clone())))
                            .min()
                    })
                    .flatten();
                if let Some((_, oldest)) = oldest {
                    h.drop_user_membership(user, &oldest);
                }
            }
        }
        h.group_users
            .entry(group.to_string())
            .or_default()
            .insert(user.to_string());
    }

    pub(crate) fn remove_user_from_group(&self, hub: &str, group: &str, user: &str) {
        let mut t = self.write();
        let key = hub_key(hub);
        if let Some(h) = t.hubs.get_mut(&key) {
            h.drop_user_membership(user, group);
            for id in h.user_connection_ids(user) {
                h.leave(group, &id);
            }
            if h.is_empty() {
                t.hubs.remove(&key);
            }
        }
    }

    pub(crate) fn remove_user_from_all_groups(&self, hub: &str, user: &str) {
        let mut t = self.write();
        let key = hub_key(hub);
        if let Some(h) = t.hubs.get_mut(&key) {
            let groups: Vec<String> = h
                .user_groups
                .get(user)
                .map(|g| g.keys().cloned().collect())
                .unwrap_or_default();
            for group in groups {
                h.drop_user_membership(user, &group);
            }
            for id in h.user_connection_ids(user) {
                for group in h.connection_groups.remove(&id).unwrap_or_default() {
                    h.leave(&group, &id);
                }
            }
            if h.is_empty() {
                t.hubs.remove(&key);
            }
        }
    }

    /// Drop expired user-group memberships.
    /// Connections registered now (negotiated ones included).
    pub(crate) fn connection_count(&self) -> usize {
        self.read().by_token.len()
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut t = self.write();
        for hub in t.hubs.values_mut() {
            hub.sweep(now);
        }
        t.hubs.retain(|_, h| !h.is_empty());
    }
}

/// Periodically drop expired memberships until shutdown.
pub(crate) async fn sweep(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = interval.tick() => shared.registry.sweep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signalr::protocol::Protocol;

    fn connected(r: &Registry, hub: &str, id: &str, user: Option<&str>) -> Arc<Connection> {
        let c = Connection::new(
            id.into(),
            id.into(),
            hub_key(hub),
            user.map(str::to_string),
            8,
        );
        c.set_protocol_for_test(Protocol::Json);
        r.insert(c.clone()).unwrap();
        r.activate(&c);
        c
    }

    fn ids(v: Vec<Arc<Connection>>) -> Vec<String> {
        let mut ids: Vec<String> = v.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn users_groups_and_exclusions() {
        let r = Registry::new(10);
        connected(&r, "Chat", "a1", Some("alice"));
        connected(&r, "chat", "a2", Some("alice"));
        let b = connected(&r, "chat", "b1", Some("bob"));
        connected(&r, "other", "o1", Some("alice"));

        assert_eq!(
            ids(r.resolve("CHAT", &Recipient::All, &[])),
            ["a1", "a2", "b1"]
        );
        assert_eq!(
            ids(r.resolve("chat", &Recipient::All, &["a2".into()])),
            ["a1", "b1"]
        );
        assert_eq!(
            ids(r.resolve("chat", &Recipient::User("alice".into()), &[])),
            ["a1", "a2"]
        );
        assert!(r.add_connection_to_group("chat", "g", "b1"));
        assert!(!r.add_connection_to_group("chat", "g", "nope"));
        r.add_user_to_group("chat", "g", "alice", None);
        assert_eq!(
            ids(r.resolve("chat", &Recipient::Group("g".into()), &["a1".into()])),
            ["a2", "b1"]
        );
        assert!(r.group_exists("chat", "g"));
        assert!(r.user_in_group("chat", "g", "alice"));
        assert!(r.user_in_group("chat", "g", "bob"));

        // A new connection of alice joins her groups.
        connected(&r, "chat", "a3", Some("alice"));
        assert_eq!(
            ids(r.resolve("chat", &Recipient::Group("g".into()), &[])),
            ["a1", "a2", "a3", "b1"]
        );

        r.remove_user_from_all_groups("chat", "alice");
        assert_eq!(
            ids(r.resolve("chat", &Recipient::Group("g".into()), &[])),
            ["b1"]
        );
        r.deactivate(&b);
        r.forget(&b);
        assert!(!r.group_exists("chat", "g"));
        assert!(!r.user_exists("chat", "bob"));
        assert_eq!(r.connected_count(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expires_and_zero_ttl_is_current_connections_only() {
        let r = Registry::new(10);
        connected(&r, "h", "a1", Some("alice"));
        r.add_user_to_group("h", "g", "alice", Some(Duration::from_secs(10)));
        assert!(r.user_in_group("h", "g", "alice"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!r.user_in_group("h", "g", "alice"));
        assert!(
            r.resolve("h", &Recipient::Group("g".into()), &[])
                .is_empty()
        );
        r.sweep();

        r.add_user_to_group("h", "z", "alice", Some(Duration::ZERO));
        connected(&r, "h", "a2", Some("alice"));
        assert_eq!(
            ids(r.resolve("h", &Recipient::Group("z".into()), &[])),
            ["a1"]
        );
    }

    #[tokio::test]
    async fn only_the_latest_untimed_groups_are_kept_and_limit_applies() {
        let r = Registry::new(1);
        connected(&r, "h", "a1", Some("alice"));
        for i in 0..=MAX_UNTIMED_GROUPS_PER_USER {
            r.add_user_to_group("h", &format!("g{i}"), "alice", None);
        }
        assert!(!r.user_in_group("h", "g0", "alice"));
        assert!(r.user_in_group("h", "g1", "alice"));
        assert!(r.user_in_group("h", &format!("g{MAX_UNTIMED_GROUPS_PER_USER}"), "alice"));
        let extra = Connection::new("x".into(), "x".into(), "h".into(), None, 8);
        assert_eq!(r.insert(extra), Err(RegistryError::Full(1)));
    }
}
