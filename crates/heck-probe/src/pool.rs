//! The keep-alive pool: idle HTTP/1 connections, keyed by what they are for.
//!
//! Invariant: a connection is reused only by a check of the same endpoint — scheme, host, port
//! and TLS settings ([`PoolKey`]) — and never after [`Pool::forget`] of that endpoint, not even
//! one that a check still running at the time hands back later. At most `cap` idle connections
//! are held, over all endpoints; one that does not fit is closed and counted.
//!
//! Why not key by target name: a name outlives its target. A check still running when its
//! target is deleted hands its connection back; a new target with the same name (another host,
//! even another scheme) would then be checked over the old host's connection.
//!
//! How a late hand-back is refused: every check on an endpoint holds a [`Lease`] while it runs.
//! `forget` drops the idle connections and, while leases are out, bumps the endpoint's
//! generation; a lease from an older generation cannot put its connection back. An endpoint's
//! entry lives only while it has idle connections or leases, so the map is bounded by
//! `cap` + the checks in flight, whatever the churn of targets.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use heck_check::{ProbeKind, TargetSpec};

/// What a connection is for: two checks with equal keys may share connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    kind: ProbeKind,
    host: Box<str>,
    port: u16,
    /// `None` for plain HTTP.
    tls: Option<TlsKey>,
}

/// The TLS settings that decide whom a TLS connection was verified as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    skip_verify: bool,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
}

impl PoolKey {
    /// The endpoint `spec` connects to.
    pub fn of(spec: &TargetSpec) -> PoolKey {
        PoolKey {
            kind: spec.kind,
            host: spec.url.host_str().unwrap_or_default().into(),
            port: spec.url.port_or_known_default().unwrap_or(0),
            tls: (spec.kind == ProbeKind::Https).then(|| TlsKey {
                skip_verify: spec.tls_skip_verify,
                ca_file: spec.tls_ca_file().map(Into::into),
                server_name: spec.tls_server_name().map(Into::into),
            }),
        }
    }
}

/// Idle connections of type `C` (generic so the rules are tested without sockets).
pub(crate) struct Pool<C> {
    cap: usize,
    state: Mutex<State<C>>,
}

struct State<C> {
    slots: HashMap<PoolKey, Slot<C>>,
    /// Idle connections over all slots (≤ cap).
    idle: usize,
    /// Connections closed because the pool was full.
    dropped_full: u64,
}

struct Slot<C> {
    idle: Vec<C>,
    leases: u32,
    generation: u64,
}

impl<C> Pool<C> {
    pub(crate) fn new(cap: usize) -> Pool<C> {
        Pool {
            cap,
            state: Mutex::new(State {
                slots: HashMap::new(),
                idle: 0,
                dropped_full: 0,
            }),
        }
    }

    /// A std mutex, held only to move an entry in or out, never across an await. A panic
    /// while holding it cannot leave the counts half-updated in a way that matters more than
    /// losing the pool, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a check on `key`: take the most recently idle connection, if any.
    pub(crate) fn lease(&self, key: PoolKey) -> Lease<'_, C> {
        let mut state = self.lock();
        let slot = state.slots.entry(key.clone()).or_insert_with(|| Slot {
            idle: Vec::new(),
            leases: 0,
            generation: 0,
        });
        slot.leases += 1;
        let generation = slot.generation;
        // Most recent first: the one least likely to have been closed by the server.
        let idle = slot.idle.pop();
        if idle.is_some() {
            state.idle -= 1;
        }
        Lease {
            pool: self,
            key,
            generation,
            idle,
            returned: None,
        }
    }

    /// Close the idle connections of `key`, and refuse the ones checks still running on it
    /// hand back later.
    pub(crate) fn forget(&self, key: &PoolKey) {
        let closed;
        {
            let mut state = self.lock();
            let Some(slot) = state.slots.get_mut(key) else {
                return;
            };
            closed = std::mem::take(&mut slot.idle);
            if slot.leases > 0 {
                slot.generation += 1;
            } else {
                state.slots.remove(key);
            }
            state.idle -= closed.len();
        }
        // Closing sockets outside the lock.
        drop(closed);
    }

    /// Idle connections held.
    pub(crate) fn idle(&self) -> usize {
        self.lock().idle
    }

    /// Connections closed because the pool was full.
    pub(crate) fn dropped_full(&self) -> u64 {
        self.lock().dropped_full
    }
}

/// One check's claim on an endpoint. Dropping it (the check finished, failed, or was cancelled
/// by its timeout) ends the claim; [`Lease::put_back`] offers the connection for reuse first.
pub(crate) struct Lease<'a, C> {
    pool: &'a Pool<C>,
    key: PoolKey,
    generation: u64,
    idle: Option<C>,
    returned: Option<C>,
}

impl<C> Lease<'_, C> {
    /// The idle connection this lease started with, if any (once).
    pub(crate) fn take(&mut self) -> Option<C> {
        self.idle.take()
    }

    /// Offer `conn` for reuse: kept unless the endpoint was forgotten since the lease began or
    /// the pool is full.
    pub(crate) fn put_back(mut self, conn: C) {
        self.returned = Some(conn);
    }
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        // Closed after the lock is released.
        let mut closed: Vec<C> = self.idle.take().into_iter().collect();
        {
            let mut state = self.pool.lock();
            let cap = self.pool.cap;
            let full = state.idle >= cap;
            let State {
                slots,
                idle,
                dropped_full,
            } = &mut *state;
            if let Some(slot) = slots.get_mut(&self.key) {
                if let Some(conn) = self.returned.take() {
                    if slot.generation != self.generation {
                        closed.push(conn);
                    } else if full {
                        *dropped_full += 1;
                        closed.push(conn);
                    } else {
                        slot.idle.push(conn);
                        *idle += 1;
                    }
                }
                slot.leases -= 1;
                if slot.leases == 0 && slot.idle.is_empty() {
                    slots.remove(&self.key);
                }
            }
        }
        drop(closed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use heck_check::{Defaults, TargetInput};

    use super::*;

    fn key(url: &str, edit: impl FnOnce(&mut TargetInput)) -> PoolKey {
        let mut input = TargetInput {
            name: "t".into(),
            url: url.into(),
            ..TargetInput::default()
        };
        edit(&mut input);
        PoolKey::of(&input.resolve(&Defaults::default()).unwrap())
    }

    fn slots<C>(p: &Pool<C>) -> usize {
        p.lock().slots.len()
    }

    #[test]
    fn the_key_is_the_endpoint_and_its_tls_settings_not_the_name() {
        let a = key("http://h:80/a", |_| {});
        assert_eq!(a, key("http://h/b?x", |t| t.name = "other".into()));
        assert_ne!(a, key("http://g/a", |_| {}));
        assert_ne!(a, key("http://h:81/a", |_| {}));
        assert_ne!(key("https://h/", |_| {}), key("http://h:443/", |_| {}));
        let tls = key("https://h/", |_| {});
        assert_ne!(tls, key("https://h/", |t| t.tls_skip_verify = Some(true)));
        assert_ne!(
            tls,
            key("https://h/", |t| t.tls_ca_file = Some("/ca.pem".into()))
        );
        assert_ne!(
            tls,
            key("https://h/", |t| t.tls_server_name = Some("n".into()))
        );
    }

    #[test]
    fn a_connection_handed_back_after_forget_is_closed_not_reused() {
        let pool = Pool::new(8);
        let k = key("http://h/", |_| {});
        let lease = pool.lease(k.clone());
        pool.forget(&k);
        lease.put_back(1);
        assert_eq!(pool.idle(), 0);
        assert!(pool.lease(k).take().is_none());
        assert_eq!(slots(&pool), 0, "no entry left behind");
    }

    #[test]
    fn a_lease_begun_after_forget_may_put_back() {
        let pool = Pool::new(8);
        let k = key("http://h/", |_| {});
        let old = pool.lease(k.clone());
        pool.forget(&k);
        pool.lease(k.clone()).put_back(2);
        old.put_back(1);
        assert_eq!(pool.lease(k).take(), Some(2));
    }

    #[test]
    fn the_pool_holds_at_most_its_cap_and_counts_the_rest() {
        let pool = Pool::new(2);
        for i in 0..3 {
            pool.lease(key(&format!("http://h{i}/"), |_| {}))
                .put_back(i);
        }
        assert_eq!((pool.idle(), pool.dropped_full()), (2, 1));
        assert_eq!(slots(&pool), 2, "the refused endpoint keeps no entry");
        // A slot freed by reuse can be filled again.
        let mut lease = pool.lease(key("http://h0/", |_| {}));
        assert_eq!(lease.take(), Some(0));
        assert_eq!(pool.idle(), 1);
        lease.put_back(0);
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn a_lease_dropped_without_put_back_leaves_nothing() {
        let pool = Pool::<u32>::new(2);
        drop(pool.lease(key("http://h/", |_| {})));
        assert_eq!((pool.idle(), slots(&pool)), (0, 0));
    }
}
