//! Environment overrides: `SENTINEL_<SECTION>__<KEY>` (nested with `__`, arrays by index).
//!
//! The environment is read through [`EnvSource`] so tests inject a map instead of mutating the
//! process environment.

use std::collections::BTreeMap;

use super::ConfigError;

/// The prefix of configuration overrides.
pub const PREFIX: &str = "SENTINEL_";

/// Where environment variables come from.
pub trait EnvSource: Send + Sync {
    /// One variable.
    fn get(&self, name: &str) -> Option<String>;
    /// Every variable whose name starts with `prefix`, sorted by name.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }
}

/// A fixed set of variables, for tests and embedding.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    /// Builds the map from pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl EnvSource for MapEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Applies every `SENTINEL_A__B__C=value` override to the parsed file.
///
/// Variables without `__` after the prefix (`SENTINEL_ADMIN_KEY`, `SENTINEL_LOG_FORMAT`) are
/// not config keys and are skipped. A value replaces a string as a string; otherwise it is read
/// as a TOML literal (`true`, `42`, `0.5`, `["a"]`) and falls back to a string.
pub fn apply_overrides(table: &mut toml::Table, env: &dyn EnvSource) -> Result<(), ConfigError> {
    for (name, value) in env.with_prefix(PREFIX) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var: name,
                reason: "empty key segment".into(),
            });
        }
        set_path(table, &path, &value).map_err(|reason| ConfigError::Env {
            var: name.clone(),
            reason,
        })?;
    }
    Ok(())
}

fn set_path(table: &mut toml::Table, path: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let mut node: &mut toml::Value = table
        .entry(parents.first().unwrap_or(last).clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if parents.is_empty() {
        *node = literal(raw, Some(node));
        return Ok(());
    }
    for seg in parents.iter().skip(1).chain(std::iter::once(last)) {
        let is_last = std::ptr::eq(seg, last);
        node = match node {
            toml::Value::Table(t) => {
                if is_last {
                    let existing = t.get(seg.as_str()).cloned();
                    t.insert(seg.clone(), literal(raw, existing.as_ref()));
                    return Ok(());
                }
                t.entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(items) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| format!("`{seg}` is not an array index"))?;
                let item = items
                    .get_mut(idx)
                    .ok_or_else(|| format!("index {idx} is past the end of the array"))?;
                if is_last {
                    *item = literal(raw, Some(item));
                    return Ok(());
                }
                item
            }
            _ => return Err(format!("`{seg}` is inside a value that is not a table")),
        };
    }
    Ok(())
}

fn literal(raw: &str, existing: Option<&toml::Value>) -> toml::Value {
    if matches!(existing, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_owned());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn overrides_nested_keys_arrays_and_keeps_strings_strings() {
        let mut t =
            table("[server]\nlisten = \"a\"\n[[providers]]\nname = \"p\"\nmax_retries = 2\n");
        let env = MapEnv::from_pairs([
            ("SENTINEL_SERVER__LISTEN", "0.0.0.0:9"),
            ("SENTINEL_PROVIDERS__0__MAX_RETRIES", "5"),
            ("SENTINEL_PROVIDERS__0__NAME", "123"),
            ("SENTINEL_CACHE__EXACT__ENABLED", "true"),
            ("SENTINEL_ADMIN_KEY", "not-config"),
        ]);
        apply_overrides(&mut t, &env).unwrap();
        assert_eq!(t["server"]["listen"].as_str(), Some("0.0.0.0:9"));
        assert_eq!(t["providers"][0]["max_retries"].as_integer(), Some(5));
        assert_eq!(t["providers"][0]["name"].as_str(), Some("123"));
        assert_eq!(t["cache"]["exact"]["enabled"].as_bool(), Some(true));
        assert!(t.get("admin_key").is_none());
    }

    #[test]
    fn bad_index_names_the_variable() {
        let mut t = table("[[providers]]\nname = \"p\"\n");
        let env = MapEnv::from_pairs([("SENTINEL_PROVIDERS__3__NAME", "x")]);
        let err = apply_overrides(&mut t, &env).unwrap_err().to_string();
        assert!(err.contains("SENTINEL_PROVIDERS__3__NAME"), "{err}");
    }
}
