//! `sentinel check-config`: validate and print the effective configuration.

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
    Ok(())
}
