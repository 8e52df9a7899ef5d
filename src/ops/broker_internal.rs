//! The reads behind Blacksmith's internal `/b/…` endpoints: the `db` index with plan
//! counts and limits, an instance's manifest, its credentials (redacted unless
//! revealed) and its last BOSH task's log. The broker serves them; this file only reads
//! the Director and Vault through [`Clients`].

use serde_json::{json, Map, Value};
use yaml_rust2::{Yaml, YamlEmitter};

use super::broker_bind::{BindError, Clients};
use crate::model::foundation::INDEX_PATH;
use crate::spec::ServiceSpec;

/// What a redacted credential value is shown as.
pub const REDACTED: &str = "<redacted>";

impl Clients {
    /// The `db` index: instance id → entry (empty when there is none).
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn index(&self) -> Result<Map<String, Value>, BindError> {
        let secret = self
            .vault
            .read(&self.mount, INDEX_PATH)
            .await
            .map_err(|source| BindError::Provider {
                context: format!("reading the index {}/{INDEX_PATH}", self.mount),
                source,
            })?;
        Ok(secret.data.unwrap_or_default())
    }

    /// Per plan of the catalog: service, plan id and name, how many `db` entries use it
    /// and its limit (0 unlimited, negative none allowed), plus the service's limit.
    #[must_use]
    pub fn plans_with_counts(&self, index: &Map<String, Value>) -> Vec<Value> {
        plans_with_counts(&self.services, index)
    }

    /// The index entry of one instance, `None` when it has none.
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn entry(&self, id: &str) -> Result<Option<Map<String, Value>>, BindError> {
        Ok(self
            .index()
            .await?
            .remove(id)
            .and_then(|v| v.as_object().cloned()))
    }

    /// The instance's manifest as kept at `{id}/manifest`, else the Director's copy of
    /// its deployment; `None` when neither exists.
    ///
    /// # Errors
    /// Vault or the Director refuses or cannot be asked.
    pub async fn manifest_of(&self, id: &str) -> Result<Option<String>, BindError> {
        let path = format!("{id}/manifest");
        let kept = self
            .vault
            .read(&self.mount, &path)
            .await
            .map_err(|source| BindError::Provider {
                context: format!("instance {id}: reading {}/{path}", self.mount),
                source,
            })?;
        if let Some(text) = kept
            .data
            .as_ref()
            .and_then(|d| d.get("manifest"))
            .and_then(Value::as_str)
        {
            return Ok(Some(text.to_string()));
        }
        let Some(deployment) = self.deployment_of(id).await? else {
            return Ok(None);
        };
        self.director
            .manifest(&deployment)
            .await
            .map_err(|source| BindError::Provider {
                context: format!("instance {id}: the manifest of deployment {deployment}"),
                source,
            })
    }

    /// The deployment name of an instance from its index entry.
    async fn deployment_of(&self, id: &str) -> Result<Option<String>, BindError> {
        Ok(self.entry(id).await?.and_then(|e| {
            e.get("deployment_name")
                .and_then(Value::as_str)
                .map(str::to_string)
        }))
    }

    /// The instance's credentials as YAML: its generated secrets (`{id}/credentials`)
    /// and every binding's credentials, each value shown as [`REDACTED`] unless
    /// `reveal`. `None` when the instance has no index entry and no secrets.
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn creds_yaml(&self, id: &str, reveal: bool) -> Result<Option<String>, BindError> {
        let path = format!("{id}/credentials");
        let read_err = |what: String| {
            move |source| BindError::Provider {
                context: format!("instance {id}: reading {what}"),
                source,
            }
        };
        let secrets = self
            .vault
            .read(&self.mount, &path)
            .await
            .map_err(read_err(format!("{}/{path}", self.mount)))?
            .data;
        if secrets.is_none() && self.entry(id).await?.is_none() {
            return Ok(None);
        }
        let bindings_path = format!("{id}/bindings");
        let names = self
            .vault
            .list(&self.mount, &bindings_path)
            .await
            .map_err(read_err(format!("{}/{bindings_path}", self.mount)))?;
        let mut bindings = Map::new();
        for bid in names.iter().filter(|n| !n.ends_with('/')) {
            if let Some(b) = self.binding(id, bid).await? {
                bindings.insert(bid.clone(), Value::Object(b.credentials));
            }
        }
        let mut doc = json!({
            "instance_id": id,
            "secrets": Value::Object(secrets.unwrap_or_default()),
            "bindings": Value::Object(bindings),
        });
        if !reveal {
            for key in ["secrets", "bindings"] {
                if let Some(v) = doc.get_mut(key) {
                    redact(v);
                }
            }
        }
        Ok(Some(to_yaml(&doc)))
    }

    /// The log of the instance's latest BOSH task, one `Task N | hh:mm:ss | stage:
    /// task state` line per event (Blacksmith's `task.log`); `None` when the instance is
    /// unknown or its deployment has no task.
    ///
    /// # Errors
    /// Vault or the Director refuses or cannot be asked.
    pub async fn task_log(&self, id: &str) -> Result<Option<String>, BindError> {
        let Some(deployment) = self.deployment_of(id).await? else {
            return Ok(None);
        };
        let provider = |what: String| {
            move |source| BindError::Provider {
                context: format!("instance {id}: {what}"),
                source,
            }
        };
        let tasks = self
            .director
            .tasks(&deployment)
            .await
            .map_err(provider(format!("the tasks of deployment {deployment}")))?;
        let Some(task) = tasks
            .iter()
            .filter_map(|t| t.get("id").and_then(Value::as_u64))
            .max()
        else {
            return Ok(None);
        };
        let events = self
            .director
            .task_output(task, "event")
            .await
            .map_err(provider(format!("the events of BOSH task {task}")))?;
        Ok(Some(task_log_lines(task, &events)))
    }
}

/// Per plan of `services`: service, plan id and name, how many `db` entries use it and
/// its limit (0 unlimited, negative none allowed), plus the service's limit (what
/// `/b/status` and the dashboard show).
#[must_use]
pub fn plans_with_counts(services: &[ServiceSpec], index: &Map<String, Value>) -> Vec<Value> {
    let count = |plan: &str| {
        index
            .values()
            .filter(|e| e.get("plan_id").and_then(Value::as_str) == Some(plan))
            .count()
    };
    let mut out = Vec::new();
    for s in services {
        for p in &s.plans {
            out.push(json!({
                "service_id": s.id,
                "service_name": s.name,
                "plan_id": p.id,
                "plan_name": p.name,
                "count": count(&p.id),
                "limit": p.limit,
                "service_limit": s.limit,
            }));
        }
    }
    out
}

/// Blacksmith's `task.log` lines from a task's event output.
#[must_use]
pub fn task_log_lines(task: u64, events: &str) -> String {
    let mut out = String::new();
    for line in events.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        let time = v
            .get("time")
            .and_then(Value::as_i64)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_else(|| "--:--:--".into());
        if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
            out.push_str(&format!("Task {task} | {time} | error: {msg}\n"));
            continue;
        }
        let stage = v.get("stage").and_then(Value::as_str).unwrap_or("");
        let what = v.get("task").and_then(Value::as_str).unwrap_or("");
        let state = v.get("state").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("Task {task} | {time} | {stage}: {what} {state}\n"));
    }
    out
}

/// Replaces every leaf value with [`REDACTED`], keeping the keys.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => m.values_mut().for_each(redact),
        Value::Array(items) => items.iter_mut().for_each(redact),
        other => *other = Value::String(REDACTED.into()),
    }
}

/// A JSON value as a YAML document.
#[must_use]
pub fn to_yaml(v: &Value) -> String {
    fn conv(v: &Value) -> Yaml {
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => n
                .as_i64()
                .map_or_else(|| Yaml::Real(n.to_string()), Yaml::Integer),
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(a) => Yaml::Array(a.iter().map(conv).collect()),
            Value::Object(m) => Yaml::Hash(
                m.iter()
                    .map(|(k, v)| (Yaml::String(k.clone()), conv(v)))
                    .collect(),
            ),
        }
    }
    let mut text = String::new();
    if YamlEmitter::new(&mut text).dump(&conv(v)).is_err() {
        // The emitter only fails on a broken writer, which a String is not.
        return String::new();
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_log_has_blacksmith_lines() {
        let events = concat!(
            "{\"time\":3600,\"stage\":\"Updating instance\",\"tags\":[\"redis\"],\"total\":1,\"task\":\"redis/0\",\"index\":1,\"state\":\"started\",\"progress\":0}\n",
            "not json\n",
            "{\"time\":3661,\"error\":{\"code\":1,\"message\":\"boom\"}}\n",
        );
        assert_eq!(
            task_log_lines(7, events),
            "Task 7 | 01:00:00 | Updating instance: redis/0 started\nTask 7 | 01:01:01 | error: boom\n"
        );
    }

    #[test]
    fn redaction_keeps_keys_and_hides_every_value() {
        let mut v = json!({"a": "pw", "b": {"c": 1, "d": ["x", true]}});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"a": REDACTED, "b": {"c": REDACTED, "d": [REDACTED, REDACTED]}})
        );
        let y = to_yaml(&json!({"k": "v", "num": 2, "l": ["a"]}));
        assert!(
            y.contains("k: v") && y.contains("num: 2") && y.contains("- a"),
            "{y}"
        );
    }
}
