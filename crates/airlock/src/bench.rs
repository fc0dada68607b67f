//! `airlock bench actions`: end-to-end latency of the decision path, measured against a
//! loopback upstream at a fixed request rate, next to the same upstream called directly.
//!
//! Everything is real: an Airlock server on a fresh data directory (durable audit log,
//! receipts signed), a tool registered with a connector to an HTTP upstream on loopback, a run
//! opened by an agent. Requests are sent open-loop at the given rate, and each latency is
//! measured from the moment its request was due, so a backlog shows up in the figures rather
//! than hiding in a slower send rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airlock_server::{Application, Config};
use airlock_store::{KeyOwner, Principal, ToolSpec};
use airlock_types::{AgentName, TenantSlug, ToolName};
use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// How to run the benchmark.
#[derive(Debug, clap::Args)]
pub struct ActionsBench {
    /// Requests per phase (direct, then through Airlock).
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// Requests per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
}

async fn upstream() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/items/{id}",
        axum::routing::get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
            axum::Json(json!({"id": id, "name": "widget", "stock": 7}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied().unwrap_or_default()
}

/// Sends `count` requests at `rate` per second, open-loop, returning each latency measured
/// from its due time.
async fn drive<F, Fut>(count: u64, rate: u64, make: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let request = make(i);
        tasks.push(tokio::spawn(async move {
            request.await?;
            Ok::<_, anyhow::Error>(due.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    latencies.sort_unstable();
    Ok(latencies)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Airlock on a scratch data directory with the tenant `bench`, for the benchmarks: no rate
/// limit, errors-only logging. Dropping it stops nothing; call [`BenchServer::stop`].
pub(crate) struct BenchServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The server's store, for fixtures.
    pub store: airlock_store::Store,
    /// The tenant `bench`.
    pub scope: airlock_store::TenantScope,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl BenchServer {
    /// Starts Airlock after `adjust` has changed its configuration, and creates the tenant.
    pub(crate) async fn start(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let data = tempfile::tempdir().context("cannot create a scratch data directory")?;
        let mut config = Config::for_data_dir(data.path());
        config.requests_per_second = 1_000_000;
        config.log_level = "error".into();
        adjust(&mut config);
        let app = Application::build(config).await?;
        let base = format!("http://{}", app.local_addr()?);
        let store = app.store().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        let operator = Principal::local_operator();
        let slug = TenantSlug::parse("bench")?;
        store.create_tenant(&operator, &slug, "bench").await?;
        let scope = store.operator_scope(&operator, &slug).await?;
        Ok(Self { base, store, scope, stop, server, _data: data })
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// Runs the benchmark and prints a report.
pub async fn run(args: &ActionsBench) -> anyhow::Result<()> {
    if args.requests == 0 || args.rate == 0 {
        bail!("`--requests` and `--rate` must be positive");
    }
    let upstream = upstream().await?;
    let bench = BenchServer::start(|config| config.actions_per_run_per_minute = u32::MAX).await?;
    let (base, store, scope) = (bench.base.clone(), bench.store.clone(), bench.scope.clone());

    // A tenant, an agent with a key, and a read-only tool on the loopback upstream.
    let agent = store.create_agent(&scope, &AgentName::parse("bench-agent")?, "benchmark").await?;
    let key = store.create_api_key(&scope, KeyOwner::Agent(agent.id), "bench", None).await?;
    let key = key.secret.expose().to_owned();
    store
        .create_tool(
            &scope,
            &ToolName::parse("get_item")?,
            ToolSpec {
                description: "Look up an item".into(),
                input_schema: json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"], "additionalProperties": false}),
                tier: "read".into(),
                side_effects: false,
                classification: "internal".into(),
                trusted_source: false,
                cost_cents: 0,
                daily_cost_ceiling_cents: None,
                connector: json!({"kind": "http", "method": "GET", "url": format!("http://{upstream}/items/{{id}}"), "body": "none", "returned_id_pointer": "/id"}),
                credential: None,
            },
        )
        .await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let opened: Value = client
        .post(format!("{base}/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"intent": "benchmark lookups", "tools": ["get_item"], "budget_cents": 0, "ttl_secs": 86400}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run = opened.pointer("/run/id").and_then(Value::as_str).context("no run id")?.to_owned();
    let lease = opened.pointer("/lease").and_then(Value::as_str).context("no lease")?.to_owned();

    let direct = |i: u64| {
        let (client, url) = (client.clone(), format!("http://{upstream}/items/item-{i}"));
        async move {
            client.get(url).send().await?.error_for_status()?.bytes().await?;
            Ok(())
        }
    };
    let through = |i: u64| {
        let (client, url, key, lease) =
            (client.clone(), format!("{base}/v1/runs/{run}/actions"), key.clone(), lease.clone());
        async move {
            let reply: Value = client
                .post(url)
                .bearer_auth(key)
                .header("x-airlock-lease", lease)
                .json(&json!({"tool": "get_item", "arguments": {"id": format!("item-{i}")}, "idempotency_key": format!("k-{i}")}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if reply.pointer("/status").and_then(Value::as_str) != Some("succeeded") {
                bail!("action not executed: {reply}");
            }
            Ok(())
        }
    };

    // Warm both paths (connections, caches), then measure.
    drive(50, args.rate, direct).await?;
    drive(50, args.rate, |i| through(1_000_000 + i)).await?;
    let direct_latency = drive(args.requests, args.rate, direct).await?;
    let airlock_latency = drive(args.requests, args.rate, through).await?;

    bench.stop().await;

    println!(
        "airlock bench actions: {} requests at {} req/s, loopback upstream, durable audit log",
        args.requests, args.rate
    );
    println!("{:<28} {:>9} {:>9} {:>9} {:>9}", "", "p50 ms", "p90 ms", "p99 ms", "max ms");
    for (label, latency) in [("upstream directly", &direct_latency), ("through Airlock", &airlock_latency)] {
        println!(
            "{label:<28} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            ms(percentile(latency, 50.0)),
            ms(percentile(latency, 90.0)),
            ms(percentile(latency, 99.0)),
            ms(percentile(latency, 100.0)),
        );
    }
    println!(
        "{:<28} {:>9.3} {:>9.3} {:>9.3}",
        "added by Airlock",
        ms(percentile(&airlock_latency, 50.0).saturating_sub(percentile(&direct_latency, 50.0))),
        ms(percentile(&airlock_latency, 90.0).saturating_sub(percentile(&direct_latency, 90.0))),
        ms(percentile(&airlock_latency, 99.0).saturating_sub(percentile(&direct_latency, 99.0))),
    );
    Ok(())
}
