//! `--data-dir`: the cluster core built from its snapshot, and the driver's snapshots (periodic
//! and *unclean*, final and *clean*). The rule for which replica id a restored node runs under
//! is in `docs/protocols/cluster.md`, "Persistence".
use std::net::SocketAddr;
use std::time::Duration;

use heck_cluster::Cluster;
use serde::Serialize;

use super::{Driver, MembershipConfig, identity, new_cluster};

/// Snapshots of the replicated state (`--data-dir`).
#[derive(Debug, Default, Serialize)]
pub struct PersistCounts {
    /// Snapshots written (periodic and final), and the size of the last one.
    pub written: u64,
    /// Bytes of the last snapshot written.
    pub last_bytes: u64,
    /// Snapshots skipped because nothing changed since the last one.
    pub unchanged: u64,
    /// Snapshots that could not be written (disk full, permissions): the node goes on, and
    /// the next period tries again.
    pub failed: u64,
}

/// The data dir of a running node: held locked for the node's life.
#[derive(Debug)]
pub struct Persist {
    dir: std::path::PathBuf,
    _lock: crate::DataDirLock,
    /// xxh3 of the last snapshot written: an unchanged state is not written again.
    last: Option<u64>,
}

/// How often the replicated state is snapshotted (when it changed).
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// Build this node's cluster core; with `--data-dir`, from its snapshot. In order: lock the dir
/// (a second agent on it is refused), read `cluster.snapshot`; if there is one, restore it
/// (refused whole, with a sentence, if corrupt, of another node, or of a newer format: the agent
/// does not start) and at once write it back as an *unclean* snapshot, so that a crash after
/// this start can never restore the same replica id again (see `docs/protocols/cluster.md`,
/// "Persistence"); without one, a new core. Errors are sentences for the operator.
pub fn open_cluster(
    config: &MembershipConfig,
    targets: Vec<heck_check::TargetSpec>,
) -> Result<(Cluster<SocketAddr>, Option<Persist>), String> {
    let Some(dir) = &config.data_dir else {
        return new_cluster(config, targets)
            .map(|c| (c, None))
            .map_err(|e| e.to_string());
    };
    let shown = dir.display();
    let lock = crate::lock_data_dir(dir).map_err(|e| format!("--data-dir {shown}: {e}"))?;
    let bytes =
        crate::read_snapshot(dir).map_err(|e| format!("--data-dir {shown}: cannot read: {e}"))?;
    let Some(bytes) = bytes else {
        let cluster = new_cluster(config, targets).map_err(|e| e.to_string())?;
        tracing::info!(dir = %shown, "no snapshot yet: starting empty");
        return Ok((
            cluster,
            Some(Persist {
                dir: dir.clone(),
                _lock: lock,
                last: None,
            }),
        ));
    };
    let (cluster, restored) =
        Cluster::restore(config.cluster.clone(), identity(config), targets, &bytes).map_err(
            |e| {
                format!(
                    "{}: {e}. Move the file away to start without it (the node then learns \
                     the state from its peers)",
                    dir.join(crate::data_dir::SNAPSHOT_FILE).display()
                )
            },
        )?;
    let unclean = cluster.snapshot(false);
    crate::write_snapshot(dir, &unclean).map_err(|e| {
        format!("--data-dir {shown}: cannot write the snapshot back before starting: {e}")
    })?;
    tracing::info!(
        dir = %shown,
        targets = cluster.targets().len(),
        kept_replica_id = restored.kept_replica_id(),
        clean = restored.clean,
        "restored the replicated state"
    );
    let last = Some(xxhash_rust::xxh3::xxh3_64(&unclean));
    Ok((
        cluster,
        Some(Persist {
            dir: dir.clone(),
            _lock: lock,
            last,
        }),
    ))
}

impl Driver {
    /// Wait for the snapshot being written, if any, and count how it ended.
    async fn reap_snapshot(&mut self) {
        if let Some((handle, hash)) = self.writing.take() {
            let result = handle.await;
            self.snapshot_written(hash, result);
        }
    }

    /// Count how a snapshot write ended.
    pub(super) fn snapshot_written(
        &mut self,
        hash: u64,
        result: Result<std::io::Result<usize>, tokio::task::JoinError>,
    ) {
        let result = result.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let Ok(mut counts) = self.view.persist.lock() else {
            return;
        };
        let Some(counts) = counts.as_mut() else {
            return;
        };
        match result {
            Ok(bytes) => {
                counts.written += 1;
                counts.last_bytes = bytes as u64;
                if let Some(p) = self.persist.as_mut() {
                    p.last = Some(hash);
                }
            }
            Err(e) => {
                counts.failed += 1;
                tracing::warn!(%e, "snapshot not written (the node goes on; the next period tries again)");
            }
        }
    }

    /// The periodic snapshot: *unclean* (this node writes on after it), written on a blocking
    /// thread, skipped when the state has not changed or the last write is still running.
    pub(super) fn snapshot(&mut self) {
        // The last write still runs (a slow disk): skip this period.
        if self.writing.is_some() {
            return;
        }
        let Some(persist) = self.persist.as_ref() else {
            return;
        };
        let bytes = self.cluster().snapshot(false);
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        if persist.last == Some(hash) {
            if let Ok(mut c) = self.view.persist.lock()
                && let Some(c) = c.as_mut()
            {
                c.unchanged += 1;
            }
            return;
        }
        let dir = persist.dir.clone();
        let handle = tokio::task::spawn_blocking(move || {
            crate::write_snapshot(&dir, &bytes).map(|()| bytes.len())
        });
        self.writing = Some((handle, hash));
    }

    /// At graceful shutdown, after leaving: the *clean* snapshot (no write follows it), so the
    /// next start keeps this node's replica id.
    pub(super) async fn final_snapshot(&mut self) {
        if self.persist.is_none() {
            return;
        }
        self.reap_snapshot().await;
        let Some(persist) = self.persist.as_ref() else {
            return;
        };
        let bytes = self.cluster().snapshot(true);
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        let dir = persist.dir.clone();
        let handle = tokio::task::spawn_blocking(move || {
            crate::write_snapshot(&dir, &bytes).map(|()| bytes.len())
        });
        self.writing = Some((handle, hash));
        self.reap_snapshot().await;
    }
}
