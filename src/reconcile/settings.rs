//! Reconciler settings and where each one came from.
//!
//! Every setting is looked up in four layers, first hit wins: a command-line flag
//! (`--max-concurrency 8`), an `ANVIL_RECONCILER_*` environment variable
//! (`ANVIL_RECONCILER_MAX_CONCURRENCY=8`), the YAML config file given with `--config`
//! (`max_concurrency: 8`), and the default. [`resolve`] is a pure function of those
//! layers, so precedence is tested with plain data; a bad value is reported naming its
//! source (the flag, the variable, or `file:line`) and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use yaml_rust2::{Yaml, YamlLoader};

fn human<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// The prefix of the environment variables.
pub const ENV_PREFIX: &str = "ANVIL_RECONCILER_";

/// What kind of value a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// A duration; `true` when zero is allowed.
    Duration(bool),
    /// An integer of at least this value.
    Int(u64),
    /// A relative Vault path segment.
    Path,
}

/// Every setting: snake_case key, kind, default, and what it means (for docs and errors).
const TABLE: &[(&str, Kind, &str)] = &[
    ("enabled", Kind::Bool, "true"),
    ("interval", Kind::Duration(false), "1h"),
    ("max_concurrency", Kind::Int(1), "5"),
    ("batch_size", Kind::Int(1), "10"),
    ("retry_attempts", Kind::Int(0), "3"),
    ("retry_delay", Kind::Duration(true), "10s"),
    ("cache_ttl", Kind::Duration(true), "5m"),
    ("backup_enabled", Kind::Bool, "true"),
    ("backup_retention", Kind::Int(1), "10"),
    ("backup_cleanup", Kind::Bool, "true"),
    ("backup_path", Kind::Path, "backups"),
];

/// The snake_case keys of every setting, in documentation order.
#[must_use]
pub fn keys() -> Vec<&'static str> {
    TABLE.iter().map(|(k, _, _)| *k).collect()
}

/// The flag a setting is set with, e.g. `--max-concurrency`.
#[must_use]
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The environment variable a setting is set with, e.g. `ANVIL_RECONCILER_MAX_CONCURRENCY`.
#[must_use]
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// How backups of an instance's Vault data are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSettings {
    /// Write a backup before changing an instance's Vault data.
    pub enabled: bool,
    /// How many backups per instance to keep (newest first).
    pub retention: usize,
    /// Delete backups beyond `retention`.
    pub cleanup: bool,
    /// The path segment under `{instance_id}/` that holds them.
    pub path: String,
}

/// The reconciler's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// Whether to reconcile at all.
    pub enabled: bool,
    /// Time between the starts of two runs in watch mode.
    #[serde(serialize_with = "human")]
    pub interval: Duration,
    /// Most operations at once.
    pub max_concurrency: usize,
    /// Instances per batch.
    pub batch_size: usize,
    /// Retries of a failed operation (after the first try).
    pub retry_attempts: u32,
    /// Delay before the first retry; the n-th retry waits n times as long.
    #[serde(serialize_with = "human")]
    pub retry_delay: Duration,
    /// How long fetched deployment details are reused.
    #[serde(serialize_with = "human")]
    pub cache_ttl: Duration,
    /// Backups.
    pub backup: BackupSettings,
}

impl Default for Settings {
    fn default() -> Self {
        // The defaults parse by construction; `resolve` with empty layers cannot fail.
        resolve(&BTreeMap::new(), |_| None, None)
            .map(|r| r.settings)
            .unwrap_or(Settings {
                enabled: true,
                interval: Duration::from_secs(3600),
                max_concurrency: 5,
                batch_size: 10,
                retry_attempts: 3,
                retry_delay: Duration::from_secs(10),
                cache_ttl: Duration::from_secs(300),
                backup: BackupSettings {
                    enabled: true,
                    retention: 10,
                    cleanup: true,
                    path: "backups".into(),
                },
            })
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag, e.g. `--interval`.
    Flag(String),
    /// An environment variable, e.g. `ANVIL_RECONCILER_INTERVAL`.
    Env(String),
    /// A line of the config file.
    File { path: PathBuf, line: usize },
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

/// A setting that could not be used, or a config file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    /// Names the source and what was expected.
    pub message: String,
}

/// Settings and the source of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub settings: Settings,
    /// By snake_case key.
    pub sources: BTreeMap<&'static str, Source>,
}

/// A parsed config file: each key's value (as text) and its line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub values: BTreeMap<String, (String, usize)>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    ///
    /// # Errors
    /// The file cannot be read, or [`ConfigFile::parse`] refuses it.
    pub fn read(path: &Path) -> Result<ConfigFile, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
            message: format!(
                "{}: cannot read the reconciler config file: {e}; check the --config path",
                path.display()
            ),
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parses a YAML map of settings (snake_case keys, scalar values). An empty file is
    /// an empty map.
    ///
    /// # Errors
    /// Not YAML, not a map, an unknown key, or a value that is not a scalar; each named
    /// `file:line`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, SettingsError> {
        let at = |line: usize, what: String| SettingsError {
            message: format!("{}:{line}: {what}", path.display()),
        };
        let docs = YamlLoader::load_from_str(text).map_err(|e| {
            let m = e.marker();
            SettingsError {
                message: format!(
                    "{}:{}:{}: not valid YAML: {}",
                    path.display(),
                    m.line().max(1),
                    m.col() + 1,
                    e.info()
                ),
            }
        })?;
        let mut values = BTreeMap::new();
        let map = match docs.into_iter().next() {
            None | Some(Yaml::Null) => {
                return Ok(ConfigFile {
                    path: path.to_path_buf(),
                    values,
                })
            }
            Some(Yaml::Hash(h)) => h,
            Some(_) => {
                return Err(at(
                    1,
                    "expected a map of settings, e.g. `interval: 30m`".into(),
                ))
            }
        };
        for (k, v) in map {
            let key = match &k {
                Yaml::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let line = key_line(text, &key);
            if !TABLE.iter().any(|(name, _, _)| *name == key) {
                return Err(at(
                    line,
                    format!(
                        "unknown setting `{key}`: expected one of {}",
                        keys().join(", ")
                    ),
                ));
            }
            let value = match v {
                Yaml::String(s) | Yaml::Real(s) => s,
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                _ => {
                    return Err(at(
                        line,
                        format!("`{key}` must be a single value (a string, number or boolean)"),
                    ))
                }
            };
            values.insert(key, (value, line));
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            values,
        })
    }
}

/// The 1-based line where `key:` is written (1 when it cannot be found).
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('"')
                .or_else(|| l.strip_prefix('\''))
                .unwrap_or(l);
            l.strip_prefix(key).is_some_and(|rest| {
                let rest = rest.trim_start_matches(['"', '\'']);
                rest.trim_start().starts_with(':')
            })
        })
        .map_or(1, |i| i + 1)
}

/// A parsed value.
enum Parsed {
    Bool(bool),
    Duration(Duration),
    Int(u64),
    Text(String),
}

fn parse(kind: Kind, raw: &str) -> Result<Parsed, String> {
    let v = raw.trim();
    match kind {
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Parsed::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Parsed::Bool(false)),
            _ => Err("expected true or false".into()),
        },
        Kind::Duration(zero_ok) => {
            let d = humantime::parse_duration(v)
                .map_err(|e| format!("not a duration ({e}): expected e.g. 30s, 5m, 1h"))?;
            if d.is_zero() && !zero_ok {
                return Err("must be longer than zero: expected e.g. 30s, 5m, 1h".into());
            }
            Ok(Parsed::Duration(d))
        }
        Kind::Int(min) => {
            let n: u64 = v
                .parse()
                .map_err(|_| format!("expected a whole number of at least {min}"))?;
            if n < min {
                return Err(format!("expected a whole number of at least {min}"));
            }
            if n > 1_000_000 {
                return Err("expected a whole number of at most 1000000".into());
            }
            Ok(Parsed::Int(n))
        }
        Kind::Path => {
            let ok = !v.is_empty()
                && !v.starts_with('/')
                && !v.ends_with('/')
                && v.split('/')
                    .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                && !v.chars().any(|c| c.is_whitespace() || c == '?' || c == '#');
            if ok {
                Ok(Parsed::Text(v.to_string()))
            } else {
                Err("expected a relative Vault path such as `backups` (no leading or trailing `/`, no `..`, no spaces)".into())
            }
        }
    }
}

/// Resolves every setting: `flags` (snake_case key → raw value) over `env` (variable
/// name → value; blank counts as unset) over `file` over the defaults.
///
/// # Errors
/// The first setting, in table order, whose winning value is bad; the message names its
/// source and what is expected.
pub fn resolve(
    flags: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
) -> Result<Resolved, SettingsError> {
    let mut parsed: BTreeMap<&'static str, Parsed> = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for (key, kind, default) in TABLE {
        let env_key = env_name(key);
        let (raw, source) = if let Some(v) = flags.get(*key) {
            (v.clone(), Source::Flag(flag_name(key)))
        } else if let Some(v) = env(&env_key).filter(|v| !v.trim().is_empty()) {
            (v, Source::Env(env_key))
        } else if let Some((v, line)) = file.and_then(|f| f.values.get(*key)) {
            let path = file.map(|f| f.path.clone()).unwrap_or_default();
            (v.clone(), Source::File { path, line: *line })
        } else {
            ((*default).to_string(), Source::Default)
        };
        let value = parse(*kind, &raw).map_err(|why| SettingsError {
            message: format!("{source}: {key} {raw:?}: {why}"),
        })?;
        parsed.insert(key, value);
        sources.insert(*key, source);
    }
    let b = |k: &str| matches!(parsed.get(k), Some(Parsed::Bool(true)));
    let d = |k: &str| match parsed.get(k) {
        Some(Parsed::Duration(d)) => *d,
        _ => Duration::ZERO,
    };
    let n = |k: &str| match parsed.get(k) {
        Some(Parsed::Int(n)) => *n,
        _ => 0,
    };
    let settings = Settings {
        enabled: b("enabled"),
        interval: d("interval"),
        max_concurrency: usize::try_from(n("max_concurrency")).unwrap_or(usize::MAX),
        batch_size: usize::try_from(n("batch_size")).unwrap_or(usize::MAX),
        retry_attempts: u32::try_from(n("retry_attempts")).unwrap_or(u32::MAX),
        retry_delay: d("retry_delay"),
        cache_ttl: d("cache_ttl"),
        backup: BackupSettings {
            enabled: b("backup_enabled"),
            retention: usize::try_from(n("backup_retention")).unwrap_or(usize::MAX),
            cleanup: b("backup_cleanup"),
            path: match parsed.get("backup_path") {
                Some(Parsed::Text(t)) => t.clone(),
                _ => String::new(),
            },
        },
    };
    Ok(Resolved { settings, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("reconciler.yml"), text).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let r = resolve(&BTreeMap::new(), |_| None, None).unwrap();
        let s = r.settings;
        assert!(s.enabled);
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert_eq!(
            (s.max_concurrency, s.batch_size, s.retry_attempts),
            (5, 10, 3)
        );
        assert_eq!(s.retry_delay, Duration::from_secs(10));
        assert_eq!(s.cache_ttl, Duration::from_secs(300));
        assert_eq!(
            s.backup,
            BackupSettings {
                enabled: true,
                retention: 10,
                cleanup: true,
                path: "backups".into()
            }
        );
        assert!(r.sources.values().all(|s| *s == Source::Default));
        assert_eq!(Settings::default().interval, Duration::from_secs(3600));
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let f = file("interval: 30m\nmax_concurrency: 7\nbatch_size: 20\nbackup_retention: 4\n");
        let e = env(&[
            ("ANVIL_RECONCILER_INTERVAL", "20m"),
            ("ANVIL_RECONCILER_MAX_CONCURRENCY", "6"),
            ("ANVIL_RECONCILER_RETRY_ATTEMPTS", "9"),
        ]);
        let fl = flags(&[("interval", "10m"), ("cache_ttl", "1m")]);
        let r = resolve(&fl, &e, Some(&f)).unwrap();
        let s = &r.settings;
        // interval: flag over env over file.
        assert_eq!(s.interval, Duration::from_secs(600));
        assert_eq!(r.sources["interval"], Source::Flag("--interval".into()));
        // max_concurrency: env over file.
        assert_eq!(s.max_concurrency, 6);
        assert_eq!(
            r.sources["max_concurrency"],
            Source::Env("ANVIL_RECONCILER_MAX_CONCURRENCY".into())
        );
        // batch_size and backup_retention: file over default.
        assert_eq!(s.batch_size, 20);
        assert_eq!(s.backup.retention, 4);
        assert_eq!(
            r.sources["batch_size"],
            Source::File {
                path: "reconciler.yml".into(),
                line: 3
            }
        );
        // retry_attempts: env over default; cache_ttl: flag over default.
        assert_eq!(s.retry_attempts, 9);
        assert_eq!(s.cache_ttl, Duration::from_secs(60));
        // retry_delay: default.
        assert_eq!(s.retry_delay, Duration::from_secs(10));
        assert_eq!(r.sources["retry_delay"], Source::Default);

        // Without the flag, the environment wins; without both, the file.
        let r = resolve(&BTreeMap::new(), &e, Some(&f)).unwrap();
        assert_eq!(r.settings.interval, Duration::from_secs(1200));
        let r = resolve(&BTreeMap::new(), |_| None, Some(&f)).unwrap();
        assert_eq!(r.settings.interval, Duration::from_secs(1800));
        assert_eq!(r.settings.max_concurrency, 7);
    }

    #[test]
    fn booleans_and_backup_settings_layer_too() {
        let f = file("backup_enabled: false\nbackup_path: snapshots\n");
        let e = env(&[("ANVIL_RECONCILER_BACKUP_ENABLED", "yes")]);
        let r = resolve(&flags(&[("backup_cleanup", "off")]), &e, Some(&f)).unwrap();
        assert!(r.settings.backup.enabled);
        assert!(!r.settings.backup.cleanup);
        assert_eq!(r.settings.backup.path, "snapshots");
        let r = resolve(&BTreeMap::new(), |_| None, Some(&f)).unwrap();
        assert!(!r.settings.backup.enabled);
    }

    #[test]
    fn blank_environment_values_count_as_unset() {
        let e = env(&[("ANVIL_RECONCILER_BATCH_SIZE", "  ")]);
        let r = resolve(&BTreeMap::new(), &e, None).unwrap();
        assert_eq!(r.settings.batch_size, 10);
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = resolve(&flags(&[("interval", "soon")]), |_| None, None).unwrap_err();
        assert!(e.message.contains("flag --interval"), "{}", e.message);
        assert!(e.message.contains("expected e.g. 30s"), "{}", e.message);

        let bad_env = env(&[("ANVIL_RECONCILER_MAX_CONCURRENCY", "0")]);
        let e = resolve(&BTreeMap::new(), &bad_env, None).unwrap_err();
        assert!(
            e.message
                .contains("environment variable ANVIL_RECONCILER_MAX_CONCURRENCY"),
            "{}",
            e.message
        );
        assert!(e.message.contains("at least 1"), "{}", e.message);

        let f = file("enabled: true\n\nbackup_enabled: maybe\n");
        let e = resolve(&BTreeMap::new(), |_| None, Some(&f)).unwrap_err();
        assert!(e.message.starts_with("reconciler.yml:3: "), "{}", e.message);
        assert!(e.message.contains("true or false"), "{}", e.message);

        let e = resolve(&flags(&[("backup_path", "/abs")]), |_| None, None).unwrap_err();
        assert!(e.message.contains("relative Vault path"), "{}", e.message);
        let e = resolve(&flags(&[("interval", "0s")]), |_| None, None).unwrap_err();
        assert!(e.message.contains("longer than zero"), "{}", e.message);
    }

    #[test]
    fn config_files_are_checked_with_lines() {
        let p = Path::new("c.yml");
        let e = ConfigFile::parse(p, "interval: 1h\nintervall: 2h\n").unwrap_err();
        assert!(
            e.message
                .starts_with("c.yml:2: unknown setting `intervall`"),
            "{}",
            e.message
        );
        let e = ConfigFile::parse(p, "interval: [1h]\n").unwrap_err();
        assert!(e.message.starts_with("c.yml:1: "), "{}", e.message);
        let e = ConfigFile::parse(p, "- a\n- b\n").unwrap_err();
        assert!(e.message.contains("expected a map"), "{}", e.message);
        let e = ConfigFile::parse(p, "interval: [\n").unwrap_err();
        assert!(e.message.contains("not valid YAML"), "{}", e.message);
        assert!(ConfigFile::parse(p, "").unwrap().values.is_empty());
        let f = ConfigFile::parse(p, "# comment\n\"batch_size\": 3\n").unwrap();
        assert_eq!(f.values["batch_size"], ("3".to_string(), 2));
    }

    #[test]
    fn names_of_flags_and_variables() {
        assert_eq!(flag_name("backup_retention"), "--backup-retention");
        assert_eq!(env_name("cache_ttl"), "ANVIL_RECONCILER_CACHE_TTL");
        assert_eq!(keys().len(), 11);
    }
}
