//! `sentinel audit verify --tenant ID`: checks a tenant's audit hash chains in the configured
//! store. Prints a summary and exits 0 when every chain is intact; otherwise names the first
//! broken or missing record and exits 1.

use std::io::Write;
use std::path::Path;

use clap::Subcommand;

use super::CliError;
use crate::audit::record::now_ms;
use crate::audit::verify;
use crate::config::{Config, EnvSource};

/// `audit` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Verify a tenant's hash chains.
    Verify {
        #[arg(long)]
        tenant: String,
    },
}

/// Runs an `audit` subcommand against the store of the config at `path`.
pub async fn run(
    path: &Path,
    env: &dyn EnvSource,
    command: AuditCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = Config::load(path, env)?;
    let store = crate::store::open(&config, None).await?;
    match command {
        AuditCommand::Verify { tenant } => {
            let (records, heads) = store.audit_all(&tenant).await?;
            let retention = u64::try_from(config.audit.retention.as_millis()).unwrap_or(u64::MAX);
            match verify::verify(&records, &heads, retention, now_ms()) {
                Ok(report) => {
                    writeln!(
                        out,
                        "ok: tenant {tenant}: {} records in {} chains verified",
                        report.records, report.chains
                    )?;
                    Ok(())
                }
                Err(broken) => Err(CliError::Tampered(format!("tenant {tenant}: {broken}"))),
            }
        }
    }
}
