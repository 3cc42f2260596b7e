//! `sentinel keys create|list|revoke`: manage keys directly in the configured store (works on
//! the embedded file while `serve` runs; the server sees changes within a second).

use std::io::Write;
use std::path::Path;

use clap::Subcommand;

use super::CliError;
use crate::config::{Config, EnvSource};
use crate::store::Store;
use crate::tenancy::{self, unix_now};

/// `keys` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Mint a key; the secret is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// e.g. `30d`, `12h`.
        #[arg(long)]
        expires_in: Option<String>,
        /// The key's own requests per minute (on top of the tenant's).
        #[arg(long)]
        rpm: Option<std::num::NonZeroU32>,
        /// The key's own tokens per minute (on top of the tenant's).
        #[arg(long)]
        tpm: Option<std::num::NonZeroU32>,
    },
    /// List a tenant's keys (never the secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key by id.
    Revoke { key_id: String },
}

/// Runs a `keys` subcommand against the store of the config at `path`.
pub async fn run(
    path: &Path,
    env: &dyn EnvSource,
    command: KeysCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = Config::load(path, env)?;
    let store = crate::store::open(&config, None).await?;
    match command {
        KeysCommand::Create {
            tenant,
            name,
            expires_in,
            rpm,
            tpm,
        } => {
            let expires = expires_in
                .map(|t| {
                    humantime::parse_duration(&t)
                        .map_err(|e| CliError::Usage(format!("--expires-in `{t}`: {e}")))
                })
                .transpose()?;
            if store.get_tenant(&tenant).await?.is_none() {
                if !tenancy::valid_tenant_id(&tenant) {
                    return Err(CliError::Usage(format!(
                        "`{tenant}` is not a valid tenant id"
                    )));
                }
                store
                    .put_tenant(&crate::store::Tenant::new(tenant.clone()))
                    .await?;
                writeln!(out, "created tenant {tenant}")?;
            }
            let limits = crate::store::Limits {
                rpm,
                tpm,
                mode: crate::config::raw::PolicyMode::Enforce,
            };
            let (secret, record) =
                tenancy::create_key(store.as_ref(), &tenant, &name, expires, limits).await?;
            writeln!(
                out,
                "id:      {}\ntenant:  {}\nname:    {}\nprefix:  {}",
                record.id, record.tenant, record.name, record.prefix
            )?;
            writeln!(
                out,
                "key:     {}\n(the key is shown only now; it is stored as a hash)",
                secret.expose()
            )?;
        }
        KeysCommand::List { tenant } => {
            for k in store.list_keys(&tenant).await? {
                let state = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(at)) if at <= unix_now() => "expired",
                    _ => "active",
                };
                let limits = [("rpm", k.limits.rpm), ("tpm", k.limits.tpm)]
                    .iter()
                    .filter_map(|(name, n)| n.map(|n| format!("{name}={n}")))
                    .collect::<Vec<_>>()
                    .join(" ");
                writeln!(out, "{}\t{}\t{}\t{state}\t{limits}", k.id, k.prefix, k.name)?;
            }
        }
        KeysCommand::Revoke { key_id } => match store.revoke_key(&key_id, unix_now()).await? {
            Some(k) => writeln!(out, "revoked {} ({})", k.id, k.tenant)?,
            None => return Err(CliError::Usage(format!("no key `{key_id}`"))),
        },
    }
    flush(store.as_ref()).await
}

async fn flush(store: &dyn Store) -> Result<(), CliError> {
    store.flush().await.map_err(CliError::from)
}
