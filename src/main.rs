//! The `sentinel` binary: parse the command line and dispatch. `anyhow` lives here only.

use std::process::ExitCode;

// glibc malloc hands memory back to the kernel and re-faults it under request churn; mimalloc
// keeps per-thread pages warm (see ../shared/notes/performance-lessons.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use sentinel::cli::{self, Cli, Command};
use sentinel::config::ProcessEnv;
use sentinel::telemetry::{self, LogFormat};

/// Returns the calling thread's free memory to the OS; lanes call it when they go quiet
/// (`sentinel::memory`).
#[expect(
    unsafe_code,
    reason = "one FFI call into the allocator the binary installed"
)]
fn release_free_memory() {
    // SAFETY: `mi_collect` has no preconditions; any thread may call it at any time, and it
    // only returns pages that hold no live allocation.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> ExitCode {
    sentinel::memory::set_release(release_free_memory);
    let cli = Cli::parse();
    let env = ProcessEnv;
    telemetry::init_tracing(LogFormat::from_env(&env), &env);
    match run(cli, env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Errors go to stderr once, with their full chain.
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, env: ProcessEnv) -> anyhow::Result<()> {
    if let Command::Cache { command } = cli.command {
        return Ok(cli::cache::run(command, &mut std::io::stdout().lock())?);
    }
    if let Command::CheckConfig { config } = &cli.command {
        return Ok(cli::check_config::run(
            config,
            &env,
            &mut std::io::stdout().lock(),
        )?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => cli::serve::run(&config, &env).await?,
            Command::MockProvider(args) => cli::mock_provider::run(args).await?,
            Command::Keys { config, command } => {
                cli::keys::run(&config, &env, command, &mut std::io::stdout().lock()).await?;
            }
            Command::Audit { config, command } => {
                cli::audit::run(&config, &env, command, &mut std::io::stdout().lock()).await?;
            }
            Command::CheckConfig { .. } | Command::Cache { .. } => {}
        }
        Ok(())
    })
}
