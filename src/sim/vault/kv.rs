//! The KV v2 secrets engine behind the Vault simulator: keys with numbered versions,
//! key and mount metadata, check-and-set, soft delete, undelete, destroy, trimming to
//! `max_versions` and listing. Pure data: no IO, the clock is passed in, and every
//! answer is the JSON `data` Vault would send or an [`ApiError`] with Vault's status and
//! error texts.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Versions a key keeps when neither the key nor the mount sets `max_versions`.
pub const DEFAULT_MAX_VERSIONS: u64 = 10;

/// The check-and-set mismatch error, word for word as Vault.
pub const CAS_MISMATCH: &str = "check-and-set parameter did not match the current version";
/// The error when `cas_required` is set and a write carries no `cas`.
pub const CAS_REQUIRED: &str = "check-and-set parameter required for this call";

/// An error answer: HTTP status and the `errors` list of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub errors: Vec<String>,
}

impl ApiError {
    /// 404 with an empty `errors` list: what Vault answers for anything absent.
    #[must_use]
    pub fn not_found() -> Self {
        Self {
            status: 404,
            errors: Vec::new(),
        }
    }

    /// 400 with one message.
    #[must_use]
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self {
            status: 400,
            errors: vec![msg.into()],
        }
    }
}

/// A successful (or half-successful) answer of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 with this `data`.
    Data(Value),
    /// 204, no body.
    NoContent,
    /// 404 whose `data` still carries the version's metadata and `data: null`: the
    /// version asked for is soft-deleted or destroyed.
    Deleted(Value),
}

/// Formats a time as Vault (Go's RFC 3339 with nanoseconds, trailing zeros dropped).
#[must_use]
pub fn vault_time(t: DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    // "2026-11-22T00:00:00.123450000Z" -> "2026-11-22T00:00:00.12345Z"
    match s.rfind('.') {
        Some(dot) => {
            let frac = s[dot + 1..s.len() - 1].trim_end_matches('0');
            if frac.is_empty() {
                format!("{}Z", &s[..dot])
            } else {
                format!("{}.{frac}Z", &s[..dot])
            }
        }
        None => s,
    }
}

#[derive(Debug, Clone)]
struct Version {
    data: Option<Map<String, Value>>,
    created: DateTime<Utc>,
    deleted: Option<DateTime<Utc>>,
    destroyed: bool,
}

impl Version {
    fn metadata(&self, number: u64, custom: &Option<Map<String, Value>>) -> Value {
        json!({
            "created_time": vault_time(self.created),
            "custom_metadata": custom,
            "deletion_time": self.deleted.map(vault_time).unwrap_or_default(),
            "destroyed": self.destroyed,
            "version": number,
        })
    }

    fn is_live(&self) -> bool {
        self.deleted.is_none() && !self.destroyed
    }
}

#[derive(Debug, Clone)]
struct Key {
    versions: BTreeMap<u64, Version>,
    current: u64,
    oldest: u64,
    max_versions: u64,
    cas_required: bool,
    delete_version_after: String,
    custom_metadata: Option<Map<String, Value>>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

impl Key {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            versions: BTreeMap::new(),
            current: 0,
            oldest: 0,
            max_versions: 0,
            cas_required: false,
            delete_version_after: "0s".into(),
            custom_metadata: None,
            created: now,
            updated: now,
        }
    }
}

/// Mount-level settings (`<mount>/config`).
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub max_versions: u64,
    pub cas_required: bool,
    pub delete_version_after: String,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            max_versions: 0,
            cas_required: false,
            delete_version_after: "0s".into(),
        }
    }
}

/// One KV v2 mount: its configuration and its keys.
#[derive(Debug, Clone, Default)]
pub struct Mount {
    pub config: MountConfig,
    keys: BTreeMap<String, Key>,
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `versions` list of delete/undelete/destroy bodies.
fn versions_of(body: &Value) -> Result<Vec<u64>, ApiError> {
    let bad = || ApiError::bad_request("no version number provided");
    let list = match body.get("versions") {
        Some(Value::Array(a)) => a.iter().map(as_u64).collect::<Option<Vec<_>>>(),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().parse().ok()).collect(),
        Some(v) => as_u64(v).map(|n| vec![n]),
        None => None,
    }
    .ok_or_else(bad)?;
    if list.is_empty() {
        return Err(bad());
    }
    Ok(list)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            v => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

fn custom_metadata_of(v: &Value) -> Result<Option<Map<String, Value>>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            if m.len() > 64 {
                return Err(ApiError::bad_request(
                    "custom_metadata: 64 keys at most are allowed",
                ));
            }
            for (k, v) in m {
                if !v.is_string() && !v.is_null() {
                    return Err(ApiError::bad_request(format!(
                        "custom_metadata: value of key {k:?} is not a string"
                    )));
                }
            }
            Ok(Some(m.clone()))
        }
        _ => Err(ApiError::bad_request(
            "custom_metadata must be a map of strings",
        )),
    }
}

impl Mount {
    fn max_versions(&self, key: &Key) -> u64 {
        if key.max_versions > 0 {
            key.max_versions
        } else if self.config.max_versions > 0 {
            self.config.max_versions
        } else {
            DEFAULT_MAX_VERSIONS
        }
    }

    /// `GET data/:path[?version=N]`.
    ///
    /// # Errors
    /// 404 (empty `errors`) when the key or the version does not exist.
    pub fn read(&self, path: &str, version: Option<u64>) -> Result<Outcome, ApiError> {
        let key = self.keys.get(path).ok_or_else(ApiError::not_found)?;
        let n = match version {
            Some(n) if n > 0 => n,
            _ => key.current,
        };
        let v = key.versions.get(&n).ok_or_else(ApiError::not_found)?;
        let metadata = v.metadata(n, &key.custom_metadata);
        match (&v.data, v.is_live()) {
            (Some(data), true) => Ok(Outcome::Data(json!({"data": data, "metadata": metadata}))),
            _ => Ok(Outcome::Deleted(
                json!({"data": Value::Null, "metadata": metadata}),
            )),
        }
    }

    fn check_cas(&self, key: Option<&Key>, options: Option<&Value>) -> Result<(), ApiError> {
        let cas = options.and_then(|o| o.get("cas"));
        let current = key.map_or(0, |k| k.current);
        match cas {
            Some(c) => {
                let c = as_u64(c).ok_or_else(|| {
                    ApiError::bad_request("error parsing check-and-set parameter")
                })?;
                if c != current {
                    return Err(ApiError::bad_request(CAS_MISMATCH));
                }
            }
            None => {
                if self.config.cas_required || key.is_some_and(|k| k.cas_required) {
                    return Err(ApiError::bad_request(CAS_REQUIRED));
                }
            }
        }
        Ok(())
    }

    fn add_version(&mut self, path: &str, data: Map<String, Value>, now: DateTime<Utc>) -> Value {
        let mut key = self.keys.remove(path).unwrap_or_else(|| Key::new(now));
        key.current += 1;
        key.updated = now;
        let v = Version {
            data: Some(data),
            created: now,
            deleted: None,
            destroyed: false,
        };
        let answer = v.metadata(key.current, &key.custom_metadata);
        key.versions.insert(key.current, v);
        let max = self.max_versions(&key);
        let mut trimmed = false;
        while key.versions.len() as u64 > max {
            key.versions.pop_first();
            trimmed = true;
        }
        if trimmed {
            key.oldest = key.versions.keys().next().copied().unwrap_or(0);
        }
        self.keys.insert(path.to_string(), key);
        answer
    }

    /// `POST`/`PUT data/:path` with `{"options":{"cas":N},"data":{...}}`.
    ///
    /// # Errors
    /// 400 on a body without `data`, a check-and-set mismatch or a missing required `cas`.
    pub fn write(
        &mut self,
        path: &str,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let data = match body.get("data") {
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Null) | None => return Err(ApiError::bad_request("no data provided")),
            Some(_) => return Err(ApiError::bad_request("data must be a JSON object")),
        };
        self.check_cas(self.keys.get(path), body.get("options"))?;
        Ok(self.add_version(path, data, now))
    }

    /// `PATCH data/:path`: a JSON merge patch of the latest version into a new version.
    ///
    /// # Errors
    /// 404 when the key is absent or its latest version deleted; 400 as [`Mount::write`].
    pub fn patch(
        &mut self,
        path: &str,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let patch = match body.get("data") {
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Null) | None => return Err(ApiError::bad_request("no data provided")),
            Some(_) => return Err(ApiError::bad_request("data must be a JSON object")),
        };
        let key = self.keys.get(path).ok_or_else(ApiError::not_found)?;
        let latest = key
            .versions
            .get(&key.current)
            .filter(|v| v.is_live())
            .and_then(|v| v.data.clone())
            .ok_or_else(ApiError::not_found)?;
        self.check_cas(Some(key), body.get("options"))?;
        let mut data = latest;
        merge_patch(&mut data, &patch);
        Ok(self.add_version(path, data, now))
    }

    /// `DELETE data/:path`: soft-deletes the latest version.
    pub fn delete_latest(&mut self, path: &str, now: DateTime<Utc>) -> Outcome {
        if let Some(key) = self.keys.get_mut(path) {
            let current = key.current;
            if let Some(v) = key.versions.get_mut(&current) {
                if v.is_live() {
                    v.deleted = Some(now);
                }
            }
        }
        Outcome::NoContent
    }

    /// `POST delete/:path {"versions":[..]}`: soft-deletes these versions.
    ///
    /// # Errors
    /// 400 when no version is given.
    pub fn delete_versions(
        &mut self,
        path: &str,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Outcome, ApiError> {
        let versions = versions_of(body)?;
        if let Some(key) = self.keys.get_mut(path) {
            for n in versions {
                if let Some(v) = key.versions.get_mut(&n) {
                    if v.is_live() {
                        v.deleted = Some(now);
                    }
                }
            }
        }
        Ok(Outcome::NoContent)
    }

    /// `POST undelete/:path {"versions":[..]}`: undoes soft deletes (not destroys).
    ///
    /// # Errors
    /// 400 when no version is given.
    pub fn undelete(&mut self, path: &str, body: &Value) -> Result<Outcome, ApiError> {
        let versions = versions_of(body)?;
        if let Some(key) = self.keys.get_mut(path) {
            for n in versions {
                if let Some(v) = key.versions.get_mut(&n) {
                    if !v.destroyed {
                        v.deleted = None;
                    }
                }
            }
        }
        Ok(Outcome::NoContent)
    }

    /// `POST destroy/:path {"versions":[..]}`: removes these versions' data for good.
    ///
    /// # Errors
    /// 400 when no version is given.
    pub fn destroy(&mut self, path: &str, body: &Value) -> Result<Outcome, ApiError> {
        let versions = versions_of(body)?;
        if let Some(key) = self.keys.get_mut(path) {
            for n in versions {
                if let Some(v) = key.versions.get_mut(&n) {
                    v.destroyed = true;
                    v.data = None;
                }
            }
        }
        Ok(Outcome::NoContent)
    }

    /// `GET metadata/:path`.
    ///
    /// # Errors
    /// 404 when the key has no metadata.
    pub fn metadata(&self, path: &str) -> Result<Value, ApiError> {
        let key = self.keys.get(path).ok_or_else(ApiError::not_found)?;
        let versions: Map<String, Value> = key
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_time": vault_time(v.created),
                        "deletion_time": v.deleted.map(vault_time).unwrap_or_default(),
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        Ok(json!({
            "cas_required": key.cas_required,
            "created_time": vault_time(key.created),
            "current_version": key.current,
            "custom_metadata": key.custom_metadata,
            "delete_version_after": key.delete_version_after,
            "max_versions": key.max_versions,
            "oldest_version": key.oldest,
            "updated_time": vault_time(key.updated),
            "versions": versions,
        }))
    }

    /// `POST`/`PUT` (`merge` false) or `PATCH` (`merge` true) `metadata/:path`: sets
    /// `max_versions`, `cas_required`, `delete_version_after`, `custom_metadata`; creates
    /// the key's metadata if it has none. Fields not given are kept.
    ///
    /// # Errors
    /// 400 on a field of the wrong type; 404 for `PATCH` of an absent key.
    pub fn write_metadata(
        &mut self,
        path: &str,
        body: &Value,
        merge: bool,
        now: DateTime<Utc>,
    ) -> Result<Outcome, ApiError> {
        if merge && !self.keys.contains_key(path) {
            return Err(ApiError::not_found());
        }
        let max_versions = match body.get("max_versions") {
            Some(v) => Some(as_u64(v).ok_or_else(|| {
                ApiError::bad_request("max_versions must be a non-negative integer")
            })?),
            None => None,
        };
        let cas_required = match body.get("cas_required") {
            Some(v) => Some(
                as_bool(v)
                    .ok_or_else(|| ApiError::bad_request("cas_required must be a boolean"))?,
            ),
            None => None,
        };
        let delete_after = match body.get("delete_version_after") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "delete_version_after must be a duration string",
                ))
            }
            None => None,
        };
        let custom = match body.get("custom_metadata") {
            Some(v) => Some(custom_metadata_of(v)?),
            None => None,
        };
        let key = self
            .keys
            .entry(path.to_string())
            .or_insert_with(|| Key::new(now));
        if let Some(m) = max_versions {
            key.max_versions = m;
        }
        if let Some(c) = cas_required {
            key.cas_required = c;
        }
        if let Some(d) = delete_after {
            key.delete_version_after = d;
        }
        match (custom, merge) {
            (Some(Some(patch)), true) => {
                let mut m = key.custom_metadata.take().unwrap_or_default();
                merge_patch(&mut m, &patch);
                key.custom_metadata = (!m.is_empty()).then_some(m);
            }
            (Some(c), _) => key.custom_metadata = c,
            (None, _) => {}
        }
        key.updated = now;
        Ok(Outcome::NoContent)
    }

    /// `DELETE metadata/:path`: forgets the key and every version.
    pub fn delete_metadata(&mut self, path: &str) -> Outcome {
        self.keys.remove(path);
        Outcome::NoContent
    }

    /// `LIST metadata/:prefix`: the names right under `prefix`, "directories" with a
    /// trailing `/`, sorted.
    ///
    /// # Errors
    /// 404 when nothing is under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Value, ApiError> {
        let prefix = prefix.trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let mut keys: Vec<String> = Vec::new();
        for name in self
            .keys
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
        {
            let rest = &name[prefix.len()..];
            let child = match rest.find('/') {
                Some(i) => &rest[..=i],
                None => rest,
            };
            if !child.is_empty() && keys.last().is_none_or(|l| l != child) {
                keys.push(child.to_string());
            }
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Err(ApiError::not_found());
        }
        Ok(json!({ "keys": keys }))
    }

    /// `GET config`.
    #[must_use]
    pub fn read_config(&self) -> Value {
        json!({
            "cas_required": self.config.cas_required,
            "delete_version_after": self.config.delete_version_after,
            "max_versions": self.config.max_versions,
        })
    }

    /// `POST config`.
    ///
    /// # Errors
    /// 400 on a field of the wrong type.
    pub fn write_config(&mut self, body: &Value) -> Result<Outcome, ApiError> {
        if let Some(v) = body.get("max_versions") {
            self.config.max_versions = as_u64(v).ok_or_else(|| {
                ApiError::bad_request("max_versions must be a non-negative integer")
            })?;
        }
        if let Some(v) = body.get("cas_required") {
            self.config.cas_required = as_bool(v)
                .ok_or_else(|| ApiError::bad_request("cas_required must be a boolean"))?;
        }
        if let Some(Value::String(s)) = body.get("delete_version_after") {
            self.config.delete_version_after = s.clone();
        }
        Ok(Outcome::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn time_format_drops_trailing_zeros_like_go() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00.123450000Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(vault_time(t), "2026-11-22T00:00:00.12345Z");
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(vault_time(t), "2026-11-22T00:00:00Z");
    }

    #[test]
    fn cas_trim_and_list() {
        let mut m = Mount::default();
        let w = |n: u64| json!({"options": {"cas": n}, "data": {"n": n}});
        m.write("a/b", &w(0), now()).unwrap();
        assert_eq!(
            m.write("a/b", &w(0), now()).unwrap_err(),
            ApiError::bad_request(CAS_MISMATCH)
        );
        m.write_metadata("a/b", &json!({"max_versions": 2}), false, now())
            .unwrap();
        m.write("a/b", &w(1), now()).unwrap();
        m.write("a/b", &w(2), now()).unwrap();
        let md = m.metadata("a/b").unwrap();
        assert_eq!(md["current_version"], 3);
        assert_eq!(md["oldest_version"], 2);
        assert_eq!(m.read("a/b", Some(1)).unwrap_err(), ApiError::not_found());
        m.write("c", &json!({"data": {}}), now()).unwrap();
        assert_eq!(m.list("").unwrap(), json!({"keys": ["a/", "c"]}));
        assert_eq!(m.list("a").unwrap(), json!({"keys": ["b"]}));
        assert_eq!(m.list("zz/").unwrap_err(), ApiError::not_found());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}})
            .as_object()
            .unwrap()
            .clone();
        let p = json!({"a": null, "b": {"c": 4}, "e": "x"})
            .as_object()
            .unwrap()
            .clone();
        merge_patch(&mut t, &p);
        assert_eq!(Value::Object(t), json!({"b": {"c": 4, "d": 3}, "e": "x"}));
    }
}
