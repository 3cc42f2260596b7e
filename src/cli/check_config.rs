//! `sentinel check-config`: validate and print the effective configuration, with a warning
//! for every routed model that has no price (it would be served at cost 0, flagged
//! `cost_unknown`).

use std::io::Write;
use std::path::Path;

use super::CliError;
use crate::config::{Config, EnvSource};

/// Loads `path` with `env` and writes the effective config (secrets masked) to `out`.
pub fn run(path: &Path, env: &dyn EnvSource, out: &mut dyn Write) -> Result<(), CliError> {
    let config = Config::load(path, env)?;
    writeln!(
        out,
        "# {}: valid\n{}",
        path.display(),
        config.to_display_toml()
    )?;
    for warning in unpriced(&config) {
        writeln!(out, "# warning: {warning}")?;
    }
    Ok(())
}

/// Routes whose upstream model has no price (built-in list or `[pricing]`).
pub fn unpriced(config: &Config) -> Vec<String> {
    config
        .models
        .iter()
        .flat_map(|m| {
            m.routes
                .iter()
                .filter(|r| config.pricing.price(&r.model).is_none())
                .map(move |r| {
                    format!(
                        "model `{}` routes to `{}` at provider `{}`, which has no price: it is served at cost 0 and flagged cost_unknown (add [pricing.\"{}\"])",
                        m.name, r.model, r.provider_name, r.model
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpriced_routes_are_named() {
        let text = r#"
[[providers]]
name = "local"
kind = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "mine"
routes = [{ provider = "local", model = "my-finetune" }, { provider = "local", model = "gpt-4o-mini" }]
"#;
        let config =
            Config::from_toml(text, Path::new("t.toml"), &crate::config::MapEnv::default())
                .unwrap();
        let warnings = unpriced(&config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("my-finetune"));
    }
}
