//! Crash-safe file primitives shared by the local backend, the journal and the lock.
//!
//! The only way anvil replaces a file is [`atomic_write`]: write a temporary sibling,
//! fsync it, rename it over the target and fsync the directory. A reader therefore sees
//! either the old or the new content, never a mix, whatever instant the process dies at.
//!
//! [`Faults`] lets tests stop the sequence between any two system calls, which is how the
//! crash tests simulate `SIGKILL` deterministically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Fault injection: after `n` more file-system steps every step fails, as if the process
/// had been killed. Production code uses [`Faults::none`], which never fails.
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults(Option<Arc<AtomicI64>>);

impl Faults {
    pub(crate) fn none() -> Self {
        Faults(None)
    }

    /// Fail every step after the first `steps` ones.
    #[cfg(test)]
    pub(crate) fn crash_after(steps: i64) -> Self {
        Faults(Some(Arc::new(AtomicI64::new(steps))))
    }

    /// Called before each file-system step.
    pub(crate) fn step(&self) -> io::Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(left) => {
                if left.fetch_sub(1, Ordering::SeqCst) > 0 {
                    Ok(())
                } else {
                    Err(io::Error::other("simulated crash (test fault injection)"))
                }
            }
        }
    }
}

/// `<dir>/<name><suffix>`: a sibling of `path` whose name has `suffix` appended.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsync a directory so that renames and unlinks inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    // Opening a directory read-only and calling fsync on it is the POSIX way to persist
    // its entries. Windows cannot open directories this way, and some file systems reject
    // fsync on directories (EINVAL); there the rename is as durable as the platform allows.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(_) if cfg!(windows) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        r => r,
    }
}

/// Which file an [`atomic_write`] step failed on, for error messages.
pub(crate) struct StepError {
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

impl From<StepError> for super::StateError {
    fn from(e: StepError) -> Self {
        super::StateError::io(e.action, e.path, e.source)
    }
}

fn at<T>(action: &'static str, path: &Path, r: io::Result<T>) -> Result<T, StepError> {
    r.map_err(|source| StepError {
        action,
        path: path.to_path_buf(),
        source,
    })
}

/// Replace `path` with `bytes` atomically.
///
/// With `backup` set, the previous content of `path` (if any) becomes `<path>.backup`.
/// The old file is hard-linked to a temporary name that is renamed onto the backup, so at
/// every instant `path` exists (old or new) and the backup is either old or older.
pub(crate) fn atomic_write(
    path: &Path,
    bytes: &[u8],
    backup: Option<&Path>,
    faults: &Faults,
) -> Result<(), StepError> {
    let dir = parent_dir(path);
    at("create directory", dir, faults.step())?;
    at("create directory", dir, fs::create_dir_all(dir))?;

    let pid = std::process::id();
    let tmp = sibling(path, &format!(".tmp.{pid}"));
    at("create", &tmp, faults.step())?;
    let mut file = at(
        "create",
        &tmp,
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp),
    )?;
    at("write", &tmp, faults.step())?;
    at("write", &tmp, file.write_all(bytes))?;
    at("fsync", &tmp, faults.step())?;
    at("fsync", &tmp, file.sync_all())?;
    drop(file);

    if let Some(backup) = backup {
        at("stat", path, faults.step())?;
        if at("stat", path, path.try_exists())? {
            let backup_tmp = sibling(backup, &format!(".tmp.{pid}"));
            at("remove", &backup_tmp, faults.step())?;
            match fs::remove_file(&backup_tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return at("remove", &backup_tmp, Err(e));
                }
                _ => {}
            }
            at("link", &backup_tmp, faults.step())?;
            if fs::hard_link(path, &backup_tmp).is_err() {
                // Some file systems have no hard links; a copy is as good for a backup,
                // only slower. Copy goes to the temporary name, so the backup is still
                // replaced in one rename.
                at("copy", &backup_tmp, fs::copy(path, &backup_tmp))?;
            }
            at("rename", backup, faults.step())?;
            at("rename", backup, fs::rename(&backup_tmp, backup))?;
        }
    }

    at("rename", path, faults.step())?;
    at("rename", path, fs::rename(&tmp, path))?;
    at("fsync", dir, faults.step())?;
    at("fsync", dir, sync_dir(dir))?;
    Ok(())
}

/// Read a whole file, mapping "not found" to `None`.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove a file if it exists and fsync its directory.
pub(crate) fn remove_durably(path: &Path, faults: &Faults) -> Result<(), StepError> {
    at("remove", path, faults.step())?;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return at("remove", path, Err(e)),
    }
    let dir = parent_dir(path);
    at("fsync", dir, faults.step())?;
    at("fsync", dir, sync_dir(dir))
}
