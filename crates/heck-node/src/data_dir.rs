//! The data dir (`--data-dir`): where the agent keeps its cluster snapshot, and the lock that
//! keeps a second agent out of it.
//!
//! Invariant: a crash at any moment leaves `cluster.snapshot` either as it was or as the new
//! one, never a mix. A snapshot is written to a temporary file in the same directory, fsynced,
//! renamed over the old one (atomic within one file system), and the directory is fsynced so
//! the rename itself survives a power loss. A temporary file left by a crash is never read (and
//! the next write truncates it). The file is readable by its owner only (0600): it holds every
//! target added through the API, headers included. What is inside the file, and why a corrupt one is refused
//! whole, is heck-cluster's `snapshot` module (`docs/protocols/cluster.md`, "Persistence").
//!
//! ```text
//!  write_snapshot:  cluster.snapshot.tmp ── write, fsync ──rename──> cluster.snapshot; fsync dir
//!  read_snapshot:   cluster.snapshot (absent: None; over 1 GiB: an error, not read)
//!  lock_data_dir:   LOCK, flock-ed for the agent's life (released by the kernel on any exit)
//! ```
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The snapshot's file name in the data dir.
pub const SNAPSHOT_FILE: &str = "cluster.snapshot";
/// Where a snapshot is written before it replaces [`SNAPSHOT_FILE`].
pub const TEMP_FILE: &str = "cluster.snapshot.tmp";
/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = "LOCK";
/// Largest snapshot read, in bytes: 1 GiB, the bound heck-cluster's decoder refuses beyond
/// (`heck_cluster::snapshot::MAX_SNAPSHOT`). A snapshot for 100,000 targets is tens of MiB.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// `e`, with what was being done to which path.
fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Replace the snapshot in `dir` with `bytes`, atomically and durably (see the module doc).
/// On error the old snapshot is untouched.
pub fn write_snapshot(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(TEMP_FILE);
    let written = create_private(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| context(e, "writing", &tmp));
    if let Err(e) = written {
        // Best effort: a leftover is harmless (never read, truncated by the next write).
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let path = dir.join(SNAPSHOT_FILE);
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(context(e, "replacing", &path));
    }
    // The rename is a change of the directory: without this fsync a power loss may undo it.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "syncing the directory", dir))
}

/// Create (or truncate) `path`, readable by its owner only: a snapshot holds every target added
/// through the API, headers included, which may carry credentials.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    // `mode` applies only when the file is created: a leftover temporary file keeps its own.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}

/// The snapshot in `dir`, or `None` if there is none. A file larger than
/// [`MAX_SNAPSHOT_BYTES`] is an error and is not read.
pub fn read_snapshot(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let path = dir.join(SNAPSHOT_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context(e, "reading", &path)),
    };
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {size} bytes, more than a snapshot may be ({MAX_SNAPSHOT_BYTES})",
                path.display()
            ),
        )
    };
    let size = file
        .metadata()
        .map_err(|e| context(e, "reading", &path))?
        .len();
    if size > MAX_SNAPSHOT_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The cap holds even if the file grows after the size was taken.
    file.take(MAX_SNAPSHOT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| context(e, "reading", &path))?;
    if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// The data dir's lock, held while this value lives (and released by the kernel however the
/// process ends, so a crash leaves no stale lock).
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked `LOCK` file (an advisory `flock`: `File::try_lock`).
    _file: File,
    /// Its path.
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Create `dir` if needed and lock it for this agent: two agents sharing one data dir would
/// overwrite each other's snapshots (and one would restore the other's replica). Fails with
/// `ErrorKind::WouldBlock` and a sentence when another process holds it. The lock file holds
/// the holder's pid, for a human looking.
pub fn lock_data_dir(dir: &Path) -> io::Result<DataDirLock> {
    fs::create_dir_all(dir).map_err(|e| context(e, "creating", dir))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| context(e, "opening", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            // A pid is a few digits: read no more than that from a file someone else wrote.
            let mut holder = String::new();
            let _ = File::open(&path).and_then(|f| f.take(32).read_to_string(&mut holder));
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "data dir {} is in use by another heck agent (pid {}); one data dir per agent",
                    dir.display(),
                    holder.trim()
                ),
            ));
        }
        Err(TryLockError::Error(e)) => return Err(context(e, "locking", &path)),
    }
    // Only the holder writes: truncate the previous holder's pid, then ours.
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| context(e, "writing", &path))?;
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system's temp dir, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "heck-data-dir-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_data_dir_without_a_snapshot_reads_none() {
        let dir = Scratch::new("none");
        assert_eq!(read_snapshot(&dir.0).unwrap(), None);
    }

    #[test]
    fn a_written_snapshot_reads_back_and_the_next_write_replaces_it_whole() {
        let dir = Scratch::new("replace");
        write_snapshot(&dir.0, b"first, and longer than the second").unwrap();
        assert_eq!(
            read_snapshot(&dir.0).unwrap().unwrap(),
            b"first, and longer than the second"
        );
        write_snapshot(&dir.0, b"second").unwrap();
        assert_eq!(read_snapshot(&dir.0).unwrap().unwrap(), b"second");
        assert!(
            !dir.0.join(TEMP_FILE).exists(),
            "the temporary file was renamed"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_snapshot_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("private");
        // A leftover temporary file from before, readable by all.
        fs::write(dir.0.join(TEMP_FILE), b"old").unwrap();
        fs::set_permissions(dir.0.join(TEMP_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        write_snapshot(&dir.0, b"secret headers").unwrap();
        let mode = fs::metadata(dir.0.join(SNAPSHOT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// What a crash in the middle of a write leaves: the old snapshot and a partial temporary
    /// file. The old one is read; the next write replaces both.
    #[test]
    fn a_temporary_file_left_by_a_crash_is_ignored_and_overwritten() {
        let dir = Scratch::new("leftover");
        write_snapshot(&dir.0, b"old").unwrap();
        fs::write(dir.0.join(TEMP_FILE), b"half of a new snap").unwrap();
        assert_eq!(read_snapshot(&dir.0).unwrap().unwrap(), b"old");
        write_snapshot(&dir.0, b"new").unwrap();
        assert_eq!(read_snapshot(&dir.0).unwrap().unwrap(), b"new");
        assert!(!dir.0.join(TEMP_FILE).exists());
    }

    #[test]
    fn disk_errors_surface_as_errors_naming_the_path() {
        let dir = Scratch::new("errors");
        // No such directory.
        let missing = dir.0.join("missing");
        let e = write_snapshot(&missing, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing"), "{e}");
        // A regular file where the directory should be.
        let file = dir.0.join("file");
        fs::write(&file, b"").unwrap();
        assert!(write_snapshot(&file, b"x").is_err());
        assert!(read_snapshot(&file).is_err());
        // A directory where the snapshot should be: the rename fails, nothing is left behind.
        let blocked = dir.0.join("blocked");
        fs::create_dir_all(blocked.join(SNAPSHOT_FILE).join("inside")).unwrap();
        let e = write_snapshot(&blocked, b"x").unwrap_err();
        assert!(e.to_string().contains(SNAPSHOT_FILE), "{e}");
        assert!(!blocked.join(TEMP_FILE).exists());
        assert!(read_snapshot(&blocked).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_data_dir_refuses_the_write_and_keeps_the_old_snapshot() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("read-only");
        write_snapshot(&dir.0, b"old").unwrap();
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o555)).unwrap();
        // A privileged process (root in a container) writes anyway: nothing to observe there.
        let privileged = File::create(dir.0.join("probe")).is_ok();
        if !privileged {
            let e = write_snapshot(&dir.0, b"new").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            assert_eq!(read_snapshot(&dir.0).unwrap().unwrap(), b"old");
        }
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_file_over_the_cap_is_refused_unread() {
        let dir = Scratch::new("large");
        // Sparse: no disk space, no read.
        let f = File::create(dir.0.join(SNAPSHOT_FILE)).unwrap();
        f.set_len(MAX_SNAPSHOT_BYTES + 1).unwrap();
        let e = read_snapshot(&dir.0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("more than a snapshot may be"), "{e}");
    }

    #[test]
    fn a_truncated_snapshot_is_refused_by_the_decoder() {
        use heck_cluster::{Cluster, Config, Identity, NodeName};
        let dir = Scratch::new("truncated");
        let me = NodeName::new("n1").unwrap();
        let id = Identity {
            name: me.clone(),
            addr: 0usize,
            incarnation: 1,
            epoch: 1,
            seed: 1,
        };
        let cluster = Cluster::new(Config::fast(), id, Vec::new()).unwrap();
        let bytes = cluster.snapshot(false);
        write_snapshot(&dir.0, &bytes).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(dir.0.join(SNAPSHOT_FILE))
            .unwrap();
        f.set_len(bytes.len() as u64 - 10).unwrap();
        let read = read_snapshot(&dir.0).unwrap().unwrap();
        let e = heck_cluster::snapshot::decode(&read, &me).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checksum mismatch: the file is corrupt or was cut short"
        );
        assert!(heck_cluster::snapshot::decode(&bytes, &me).is_ok());
    }

    #[test]
    fn a_second_agent_cannot_lock_a_locked_data_dir_until_the_first_lets_go() {
        let dir = Scratch::new("lock");
        let data = dir.0.join("data"); // created by the lock
        let first = lock_data_dir(&data).unwrap();
        let pid = fs::read_to_string(first.path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let e = lock_data_dir(&data).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(
            e.to_string().contains("in use by another heck agent"),
            "{e}"
        );
        drop(first);
        let again = lock_data_dir(&data).unwrap();
        assert_eq!(again.path(), data.join(LOCK_FILE));
    }
}
