//! `sentinel serve`: load the config, build the state, serve until SIGTERM, drain, exit 0.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CliError;
use crate::audit::spill::Spill;
use crate::audit::writer::{AuditWriter, SharedSpill};
use crate::audit::AuditSink;
use crate::config::{Config, EnvSource};
use crate::judge::worker::Workers;
use crate::judge::Judge;
use crate::lanes::{LaneQueue, LaneReceivers};
use crate::metering::Meter;
use crate::middleware::auth::AdminKey;
use crate::mock_provider::{MockOptions, MockProvider};
use crate::policy::lease::{Leases, LEASE_FOR};
use crate::policy::Policy;
use crate::proxy::Proxy;
use crate::server::{self, stack};
use crate::state::AppState;
use crate::tasks::Tasks;
use crate::telemetry;
use crate::tenancy::{self, Tenancy};
use crate::tokens::{Encoding, Tokenizer};

/// Sampled answers waiting for the judge; a full queue drops the sample (counted).
const JUDGE_QUEUE: usize = 1024;
/// Concurrent judge calls.
const JUDGE_WORKERS: usize = 2;

/// How often histogram buffers are folded into the exported state.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Runs the gateway with the configuration at `path`.
pub async fn run(path: &Path, env: &dyn EnvSource) -> Result<(), CliError> {
    let started = Instant::now();
    let config = Arc::new(Config::load(path, env)?);
    let metrics = telemetry::install_metrics(&config)?;
    let tasks = Tasks::new();

    let upkeep = metrics.clone();
    tasks.spawn_every("metrics-upkeep", METRICS_UPKEEP, move || {
        upkeep.run_upkeep();
        std::future::ready(())
    });

    if let Some(addr) = config.demo.mock_provider {
        let mock = MockProvider::start(addr, MockOptions::default(), &tasks).await?;
        tracing::info!(addr = %mock.addr(), "demo mock provider listening ([demo] mock_provider)");
    }

    let store = crate::store::open(&config, Some(&tasks)).await?;
    tenancy::bootstrap(store.as_ref(), &config.tenants).await?;
    let tenancy = Arc::new(Tenancy::new(Arc::clone(&store)));
    tenancy.spawn_watch(&tasks);
    let admin = env
        .get("SENTINEL_ADMIN_KEY")
        .filter(|k| !k.is_empty())
        .map(|k| AdminKey::new(&k));
    if admin.is_none() {
        tracing::info!("SENTINEL_ADMIN_KEY is not set: the admin API is off");
    }

    let Accounting {
        proxy,
        meter,
        policy,
        audit_lanes,
        spill,
    } = accounting(&config, &store, &tasks)?;
    let cache = crate::cache::Cache::new(
        Arc::clone(&store),
        config.cache.clone(),
        config.server.workers,
        &tasks,
        semantic_index(&config, &store, &proxy, &meter),
    );
    let state = AppState {
        config: Arc::clone(&config),
        proxy,
        tenancy,
        meter,
        cache,
        admin,
        metrics: Some(metrics),
        started,
    };
    let app = stack::app(&state);
    let listener = server::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;

    let shutdown = tasks.shutdown_token();
    let signal_token = shutdown.clone();
    tasks.spawn("signals", async move {
        tokio::select! {
            () = server::shutdown_signal() => signal_token.cancel(),
            () = signal_token.cancelled() => {}
        }
    });
    let mut lanes = server::serve_lanes(
        listener,
        config.server.workers,
        app,
        &tasks,
        shutdown,
        server::ServeOptions {
            header_read_timeout: config.server.header_read_timeout,
            grace: config.server.shutdown_grace,
        },
        lane_start(LaneWork {
            store: Arc::clone(&store),
            spill,
            audit_lanes,
            cache: Arc::clone(&state.cache),
            leases: policy.leases().cloned(),
            tasks: tasks.clone(),
        }),
    )
    .await?;
    tracing::info!(%addr, lanes = config.server.workers, version = env!("CARGO_PKG_VERSION"), "listening");

    if !lanes.stopped().await {
        tracing::warn!("shutdown grace elapsed with requests still in flight; they were cut");
    }
    give_back_leases(&policy, config.server.shutdown_grace).await;
    // The audit writers stop once the last handle on their queues is gone: the state's here, the
    // rest with the stream drains and judge workers that finish below.
    drop(state);
    drain_background(
        &tasks,
        &policy,
        store.as_ref(),
        config.server.shutdown_grace,
    )
    .await;
    lanes.release().await;
    tracing::info!("stopped");
    Ok(())
}

/// Once the lanes stopped serving: every admission lease ends and gives back what it did not
/// use (a request still running past the grace finds no lease and goes to the store).
async fn give_back_leases(policy: &Policy, grace: Duration) {
    if let Some(leases) = policy.leases() {
        if tokio::time::timeout(grace, leases.close()).await.is_err() {
            tracing::warn!("giving back admission leases did not finish in time");
        }
    }
}

/// The background work's end: every task drained (the audit writers write what is queued),
/// then the lease give-backs those last writes set off are waited for (failed ones tried once
/// more), then the store's final flush.
async fn drain_background(
    tasks: &Tasks,
    policy: &Policy,
    store: &dyn crate::store::Store,
    grace: Duration,
) {
    tasks.begin_shutdown();
    if !tasks.drain(grace).await {
        tracing::warn!(
            remaining = tasks.len(),
            "background tasks did not finish in time"
        );
    }
    if let Some(leases) = policy.leases() {
        if tokio::time::timeout(grace, leases.finish()).await.is_err() {
            tracing::warn!("finishing admission leases did not finish in time");
        }
    }
    if let Err(err) = store.flush().await {
        tracing::error!(error = %err, "final store flush failed");
    }
}

/// What a serving lane needs to start its own background work.
struct LaneWork {
    store: Arc<dyn crate::store::Store>,
    spill: SharedSpill,
    audit_lanes: LaneReceivers<crate::store::Outcome>,
    cache: Arc<crate::cache::Cache>,
    leases: Option<Arc<Leases>>,
    tasks: Tasks,
}

/// What each serving lane does before it accepts: open its own store connection and keep it
/// checked, start the audit and cache-fill writers for the requests it will serve, end its
/// expired admission leases ([`crate::policy::lease`]), and watch for quiet spells to hand
/// freed memory back ([`crate::memory`]).
fn lane_start(work: LaneWork) -> server::LaneStart {
    let work = Arc::new(work);
    Arc::new(move |lane| {
        let work = Arc::clone(&work);
        Box::pin(async move {
            work.store.attach_lane(lane).await;
            // An idle lane's connection reconnects after an outage before a request needs
            // it, and `/health` reports the store ok only once every lane's does.
            let store = Arc::clone(&work.store);
            work.tasks
                .spawn_every("lane-store-ping", tenancy::WATCH_INTERVAL, move || {
                    let store = Arc::clone(&store);
                    async move {
                        if let Err(err) = store.ping().await {
                            tracing::debug!(error = %err, "lane store ping failed");
                        }
                    }
                });
            if let Some(rx) = work.audit_lanes.take(lane) {
                start_audit_writer(&work.store, &work.spill, rx, &work.tasks);
            }
            work.cache.start_lane_filler(lane, &work.tasks);
            if let Some(leases) = &work.leases {
                let leases = Arc::clone(leases);
                work.tasks
                    .spawn_every("lane-lease-sweep", LEASE_FOR / 2, move || {
                        let leases = Arc::clone(&leases);
                        async move { leases.sweep().await }
                    });
            }
            crate::memory::release_when_idle(&work.tasks);
        })
    })
}

/// The accounting half of the state.
struct Accounting {
    proxy: Arc<Proxy>,
    meter: Arc<Meter>,
    policy: Arc<Policy>,
    /// Each lane starts its own writer on its queue. Only the receivers: the senders live in
    /// the meter, and a writer stops once they are gone.
    audit_lanes: LaneReceivers<crate::store::Outcome>,
    spill: SharedSpill,
}

/// The accounting half of the state: tokenizer, admission, audit writers, judge, meter, and
/// the proxy the judge calls through.
fn accounting(
    config: &Arc<Config>,
    store: &Arc<dyn crate::store::Store>,
    tasks: &Tasks,
) -> Result<Accounting, CliError> {
    let tokenizer = Arc::new(Tokenizer::new(Vec::new()));
    // The default encoding (every current OpenAI model's) is built now, off the workers, so
    // the first request that counts tokens does not wait the ~5 ms its automaton takes.
    let warm = Arc::clone(&tokenizer);
    tasks.spawn("tokenizer-prepare", async move {
        warm.prepare_encoding(Encoding::O200kBase).await;
    });
    let policy = Arc::new(Policy::new(
        config,
        Arc::clone(store),
        Arc::clone(&tokenizer),
        &config.pricing,
    ));
    // `audit.queue_capacity` bounds the records held in memory: it is shared out among the
    // lanes' queues and the shared one.
    let per_queue = (config.audit.queue_capacity / (config.server.workers + 1)).max(1);
    let (audit_queues, audit_rx, audit_lanes) = LaneQueue::new(config.server.workers, per_queue);
    let audit_queues = Arc::new(audit_queues);
    let spill =
        Spill::open(&config.audit.spill_path).map_err(|e| CliError::Usage(e.to_string()))?;
    let spill = Arc::new(tokio::sync::Mutex::new(spill));
    start_audit_writer(store, &spill, audit_rx, tasks);
    let (judge_tx, judge_rx) = tokio::sync::mpsc::channel(JUDGE_QUEUE);
    let judge = config
        .judge
        .clone()
        .map(|judge_config| Judge::new(judge_tx, judge_config));
    // Trace export (off without `[telemetry] otlp_endpoint`): the meter holds the only tracer,
    // so the export task flushes and ends when the meter is gone, like the audit writer.
    let tracer = crate::otel::Tracer::start(
        &config.telemetry,
        config.models.iter().map(|m| m.name.clone()),
        tasks,
    )?;
    let meter = Arc::new(
        Meter::new(
            tokenizer,
            Arc::clone(&config.pricing),
            Arc::clone(&policy),
            AuditSink::new(Arc::clone(&audit_queues), tasks.clone()),
            tasks.clone(),
            config.audit.store_bodies,
            judge,
        )
        .with_tracer(tracer),
    );

    let proxy = Arc::new(Proxy::new(config, tasks.clone())?);
    if let Some(judge_config) = config.judge.clone() {
        let workers = Workers::new(
            Arc::clone(&proxy),
            Arc::clone(&meter),
            Arc::clone(store),
            judge_config,
        );
        let rx = Arc::new(tokio::sync::Mutex::new(judge_rx));
        for _ in 0..JUDGE_WORKERS {
            tasks.spawn(
                "judge-worker",
                Arc::clone(&workers).run(Arc::clone(&rx), tasks.shutdown_token()),
            );
        }
    }
    Ok(Accounting {
        proxy,
        meter,
        policy,
        audit_lanes,
        spill,
    })
}

/// Starts an audit writer, with a chain of its own, on the calling runtime.
fn start_audit_writer(
    store: &Arc<dyn crate::store::Store>,
    spill: &SharedSpill,
    rx: tokio::sync::mpsc::Receiver<crate::store::Outcome>,
    tasks: &Tasks,
) {
    let writer = AuditWriter::new(Arc::clone(store), Arc::clone(spill));
    tracing::info!(chain = writer.chain(), lane = ?crate::lanes::current(), "audit writer started");
    tasks.spawn("audit-writer", writer.run(rx));
}

/// The semantic index, when some tenant may use it and its embedder is available. Missing
/// model files are one clear warning, not a failed start: the exact cache still works and
/// `/health` shows the semantic cache `disabled`.
fn semantic_index(
    config: &Config,
    store: &Arc<dyn crate::store::Store>,
    proxy: &Arc<Proxy>,
    meter: &Arc<Meter>,
) -> Option<Arc<dyn crate::cache::SemanticLookup>> {
    use crate::cache::index::{SemanticIndex, Source};
    let c = &config.cache;
    let wanted = c.semantic_enabled
        || config
            .tenants
            .iter()
            .any(|t| t.cache.as_ref().and_then(|x| x.semantic) == Some(true));
    if !wanted {
        return None;
    }
    let source = if let Some(model) = c.semantic_embedder.strip_prefix("remote:") {
        Source::Remote(Box::new(crate::cache::remote::GatewayEmbed::new(
            Arc::clone(proxy),
            Arc::clone(meter),
            model,
        )))
    } else {
        match crate::cache::semantic::MiniLm::load(&c.semantic_model_dir) {
            Ok(model) => Source::Local(Arc::new(model)),
            Err(e) => {
                tracing::warn!(error = %e, dir = %c.semantic_model_dir.display(),
                    "the semantic cache is disabled: its model could not be loaded (run scripts/fetch-model); the exact cache is unaffected");
                return None;
            }
        }
    };
    Some(Arc::new(SemanticIndex::new(
        Arc::clone(store),
        source,
        c.semantic_threshold,
        c.semantic_ttl,
        c.semantic_max_entries,
    )))
}
