//! The commands that work from the state alone, never loading a spec: `show`,
//! `state list|show|rm|mv` and `force-unlock`. Which state they read is given by a
//! [`StateTarget`] (`--state URL`, `--workspace NAME`, or the only workspace under
//! `./state/`), so they run from any directory.

use super::events::{emit, EventSink, OpsEvent};
use super::OpsError;
use crate::state::{self, ResourceState, State, StateBackend};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which state a state-only command works on.
#[derive(Debug, Clone, Default)]
pub struct StateTarget {
    /// `--state URL` / `ANVIL_STATE`.
    pub url: Option<String>,
    /// `--workspace NAME`: `state/NAME.json`, or `NAME.json` in a directory URL.
    pub workspace: Option<String>,
}

/// Where anvil keeps state when no `--state` is given (relative to the current
/// directory).
pub const DEFAULT_STATE_DIR: &str = "state";

/// The local directory a state URL names, when it names a directory (so the
/// workspace picks the file in it).
fn local_dir(url: &str) -> Option<PathBuf> {
    let raw = url.strip_prefix("file://").unwrap_or(url);
    if raw.is_empty() || raw.contains("://") {
        return None;
    }
    let p = PathBuf::from(raw);
    (raw.ends_with('/') || p.is_dir()).then_some(p)
}

/// The workspaces with anything of theirs in `dir`: a state `NAME.json`, or the lock,
/// journal or backup beside it (a run killed before its first write leaves only a
/// lock, which `force-unlock` must still find). Sorted, each once.
fn workspaces_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let names: std::collections::BTreeSet<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = [".json", ".json.lock", ".json.journal", ".json.backup"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))?;
            (!stem.is_empty()).then(|| stem.to_string())
        })
        .collect();
    names.into_iter().collect()
}

/// The one workspace with state in `dir`, or an error saying which exist and how to
/// pick one.
fn only_workspace(dir: &Path) -> Result<String, OpsError> {
    let names = workspaces_in(dir);
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(OpsError::Usage(format!(
            "no state found: {}/ holds no `NAME.json` state (anvil apply writes state/<metadata.name>.json in the directory it runs in); run this where you ran apply, or name the state with --workspace NAME or --state URL",
            dir.display()
        ))),
        several => Err(OpsError::Usage(format!(
            "{}/ holds the state of several workspaces ({}): pick one with --workspace NAME, e.g. --workspace {}",
            dir.display(),
            several.join(", "),
            several[0]
        ))),
    }
}

/// The workspace the spec in the current directory names, if one loads there.
fn cwd_workspace() -> Option<String> {
    let opts = crate::spec::LoadOptions {
        vars: std::collections::BTreeMap::new(),
        env: super::utf8_env(),
    };
    let spec = crate::spec::load(&[PathBuf::from(".")], &opts).ok()?;
    spec.workspace().map(str::to_string)
}

/// Opens the state a [`StateTarget`] names, without loading any spec.
///
/// # Errors
/// An unusable URL or workspace name, or no `--workspace` where `./state/` (or the
/// directory URL) holds no state or several.
pub fn open_target(target: &StateTarget) -> Result<Box<dyn StateBackend>, OpsError> {
    let url = target.url.as_deref();
    let workspace = match (&target.workspace, url) {
        (Some(ws), _) => ws.clone(),
        (None, Some(url)) => match local_dir(url) {
            Some(dir) => only_workspace(&dir)?,
            // A remote backend holds many workspaces: without --workspace, the one the
            // spec in the current directory names, if there is one (else `default`).
            None if url.contains("://") && !url.starts_with("file://") => {
                cwd_workspace().unwrap_or_else(|| "default".to_string())
            }
            // A state file: the workspace name does not pick it.
            None => "default".to_string(),
        },
        (None, None) => only_workspace(Path::new(DEFAULT_STATE_DIR))?,
    };
    Ok(state::open(url, &workspace)?)
}

/// A state as read, with where it was read from.
pub struct ShownState {
    /// The backend's description, e.g. `file://state/demo.json`.
    pub location: String,
    /// False when nothing was ever written there (nothing applied yet).
    pub exists: bool,
    pub state: State,
}

/// A state that was never written has serial 0; every write bumps it.
fn written(st: &State) -> bool {
    st.serial > 0 || !st.resources.is_empty()
}

/// `anvil show` and `anvil state list`: reads the state.
///
/// # Errors
/// As [`open_target`], or the state cannot be read.
pub async fn read_state(target: &StateTarget) -> Result<ShownState, OpsError> {
    let backend = open_target(target)?;
    let state = backend.load().await?;
    let exists = written(&state) || backend.exists().await?;
    Ok(ShownState {
        location: backend.describe(),
        exists,
        state,
    })
}

/// `anvil state show ADDR`: one recorded resource.
///
/// # Errors
/// As [`read_state`], or the address is not recorded (the message says where anvil
/// looked).
pub async fn state_show(target: &StateTarget, address: &str) -> Result<ResourceState, OpsError> {
    let shown = read_state(target).await?;
    let mut st = shown.state;
    st.resources.remove(address).ok_or_else(|| {
        let why = if shown.exists {
            "see `anvil state list` for what is recorded".to_string()
        } else {
            "there is no state there yet (nothing applied)".to_string()
        };
        OpsError::Usage(format!("{address}: not in state {}; {why}", shown.location))
    })
}

async fn take_lock(
    backend: &dyn StateBackend,
    target: &StateTarget,
    operation: &str,
    timeout: Duration,
    sink: &EventSink,
) -> Result<Box<dyn state::Lock>, OpsError> {
    if !timeout.is_zero() {
        emit(
            sink,
            OpsEvent::LockWait {
                state: backend.describe(),
                timeout,
            },
        );
    }
    backend
        .lock(operation, timeout)
        .await
        .map_err(|e| super::lock_error(e, target))
}

/// `anvil state rm`: forgets records under the lock; the real objects are untouched.
/// Returns where the state is.
///
/// # Errors
/// As [`open_target`]; the lock cannot be taken; an address is not recorded (nothing
/// is removed then); the state cannot be read or written.
pub async fn state_rm(
    target: &StateTarget,
    addresses: &[String],
    lock_timeout: Duration,
    sink: &EventSink,
) -> Result<String, OpsError> {
    let backend = open_target(target)?;
    let lock = take_lock(backend.as_ref(), target, "state rm", lock_timeout, sink).await?;
    let mut st = backend.load().await?;
    for a in addresses {
        if st.resources.remove(a).is_none() {
            return Err(OpsError::Usage(format!(
                "{a}: not in state {}; nothing was removed. See `anvil state list{}`",
                backend.describe(),
                target_flags(target)
            )));
        }
    }
    st.serial += 1;
    backend.write(&st, lock.as_ref()).await?;
    Ok(backend.describe())
}

/// `anvil state mv`: moves a record to another address of the same type, under the
/// lock. Returns where the state is.
///
/// # Errors
/// As [`open_target`]; the lock cannot be taken; the source is not recorded; the
/// destination is taken or not an address of the same type; the state cannot be read
/// or written.
pub async fn state_mv(
    target: &StateTarget,
    source: &str,
    destination: &str,
    lock_timeout: Duration,
    sink: &EventSink,
) -> Result<String, OpsError> {
    let dest = crate::model::Address::parse(destination)
        .map_err(|e| OpsError::Usage(format!("destination {e}")))?;
    let backend = open_target(target)?;
    let lock = take_lock(backend.as_ref(), target, "state mv", lock_timeout, sink).await?;
    let mut st = backend.load().await?;
    let flags = target_flags(target);
    if st.resources.contains_key(destination) {
        return Err(OpsError::Usage(format!(
            "{destination}: already in state {}; remove it first with `anvil state rm{flags} {destination}`",
            backend.describe()
        )));
    }
    let Some(mut rec) = st.resources.remove(source) else {
        return Err(OpsError::Usage(format!(
            "{source}: not in state {}; see `anvil state list{flags}`",
            backend.describe()
        )));
    };
    if rec.ty != dest.ty {
        return Err(OpsError::Usage(format!(
            "cannot move {source} to {destination}: the type differs ({} vs {}); a record keeps its type",
            rec.ty, dest.ty
        )));
    }
    rec.updated_at = chrono::Utc::now();
    st.resources.insert(destination.to_string(), rec);
    st.serial += 1;
    backend.write(&st, lock.as_ref()).await?;
    Ok(backend.describe())
}

/// `anvil force-unlock ID`: removes the lock with that id. Returns where the state is.
///
/// # Errors
/// As [`open_target`]; no lock, or a lock with another id (the message names it).
pub async fn force_unlock(target: &StateTarget, id: &str) -> Result<String, OpsError> {
    let backend = open_target(target)?;
    backend.force_unlock(id).await?;
    Ok(backend.describe())
}

/// The flags that name `target` again, for commands anvil suggests (` --state URL`,
/// ` --workspace NAME`, or nothing).
#[must_use]
pub fn target_flags(target: &StateTarget) -> String {
    let mut s = String::new();
    if let Some(url) = &target.url {
        // A password in the URL is never printed: the user puts it back (or sets
        // ANVIL_STATE, which --state defaults to).
        s.push_str(&format!(" --state {}", shell_word(&state::redact_url(url))));
    }
    if let Some(ws) = &target.workspace {
        s.push_str(&format!(" --workspace {}", shell_word(ws)));
    }
    s
}

/// `word` quoted for a POSIX shell when it needs it, so suggested commands run as
/// printed.
#[must_use]
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_workspace_picks_the_single_state_and_names_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let e = only_workspace(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("no state found") && e.contains("--workspace NAME"),
            "{e}"
        );
        // A run killed before its first write leaves only its lock.
        std::fs::write(dir.path().join("demo.json.lock"), "{}").unwrap();
        assert_eq!(only_workspace(dir.path()).unwrap(), "demo");
        for f in [
            "demo.json",
            "demo.json.backup",
            "demo.json.journal",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        assert_eq!(only_workspace(dir.path()).unwrap(), "demo");
        std::fs::write(dir.path().join("other.json"), "{}").unwrap();
        let e = only_workspace(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("demo, other") && e.contains("--workspace demo"),
            "{e}"
        );
    }

    #[test]
    fn suggested_flags_are_quoted_for_the_shell() {
        assert_eq!(shell_word("state/a.json"), "state/a.json");
        assert_eq!(shell_word("my dir/it's.json"), r"'my dir/it'\''s.json'");
        assert_eq!(shell_word(""), "''");
        let t = StateTarget {
            url: Some("/tmp/x y".into()),
            workspace: Some("w".into()),
        };
        assert_eq!(target_flags(&t), " --state '/tmp/x y' --workspace w");
    }
}
