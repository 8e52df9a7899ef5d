//! TEMPORARY stand-in for the state module (replaced by branch `state`).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const STATE_VERSION: u32 = 1;
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub lineage: uuid::Uuid,
    pub serial: u64,
    pub resources: BTreeMap<String, ResourceState>,
    #[serde(default)]
    pub pending: Vec<PendingOp>,
}
impl State {
    pub fn new() -> State {
        State {
            version: 1,
            lineage: uuid::Uuid::new_v4(),
            serial: 0,
            resources: BTreeMap::new(),
            pending: vec![],
        }
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    #[serde(rename = "type")]
    pub ty: String,
    pub provider: String,
    pub attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<String, String>,
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub lifecycle: RecordedLifecycle,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedLifecycle {
    #[serde(default)]
    pub prevent_destroy: bool,
    #[serde(default)]
    pub create_before_destroy: bool,
    #[serde(default)]
    pub retain_on_delete: bool,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOp {
    pub address: String,
    pub operation: Operation,
    pub started_at: DateTime<Utc>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    Delete,
}
pub fn fingerprint(value: &serde_json::Value) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum JournalRecord {
    Intent {
        address: String,
        operation: Operation,
        at: DateTime<Utc>,
    },
    Applied {
        serial: u64,
        address: String,
        resource: ResourceState,
    },
    Removed {
        serial: u64,
        address: String,
    },
    Failed {
        address: String,
        operation: Operation,
        error: String,
    },
}
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Other(String),
}
pub struct LockHandle;
impl LockHandle {
    pub fn is_lost(&self) -> bool {
        false
    }
}
pub struct Commit;
impl Commit {
    pub async fn wait(self) -> Result<(), StateError> {
        Ok(())
    }
    pub fn wait_blocking(self) -> Result<(), StateError> {
        Ok(())
    }
}
pub struct JournalWriter;
impl JournalWriter {
    pub fn append(&self, _rec: JournalRecord) -> Commit {
        Commit
    }
    pub fn checkpoint_due(&self) -> bool {
        false
    }
    pub fn checkpoint(&self, _state: &State) -> Commit {
        Commit
    }
    pub fn finish(self, _state: &State) -> Result<(), StateError> {
        Ok(())
    }
}
pub trait StateBackend: Send + Sync {
    fn describe(&self) -> String;
    fn load(&self) -> Result<State, StateError>;
    fn lock(&self, operation: &str, timeout: std::time::Duration)
        -> Result<LockHandle, StateError>;
    fn force_unlock(&self, id: &str) -> Result<(), StateError>;
    fn write(&self, state: &State, lock: &LockHandle) -> Result<(), StateError>;
    fn journal(&self, base: &State, lock: &LockHandle) -> Result<JournalWriter, StateError>;
}
pub fn open(_url: Option<&str>, _workspace: &str) -> Result<Box<dyn StateBackend>, StateError> {
    Err(StateError::Other("stub".into()))
}
