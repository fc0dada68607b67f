//! `airlock bench keys`: how fast a data-key rotation re-encrypts rows, and how fast a tenant
//! export is written, on a scratch data directory filled with a realistic tenant.
//!
//! The tenant gets `rows` sealed token-vault values (what a busy gateway leaves) and one audit
//! entry per ten values, each with the metadata a model call records. The rotation runs as
//! `airlock keys rotate --tenant … --grace 0s` would; the export is written to a sink that
//! only counts, so the figure is Airlock's, not the disk's.

use std::time::{Duration, Instant};

use airlock_server::Config;
use airlock_store::{Principal, RotateOptions, VaultEntry};
use airlock_types::TenantSlug;
use serde_json::{Map, Value, json};

/// How to run the benchmark.
#[derive(Debug, clap::Args)]
pub struct KeysBench {
    /// Sealed token-vault values in the tenant.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Rows re-encrypted per transaction.
    #[arg(long, default_value_t = 500)]
    batch: u32,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: &KeysBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config::for_data_dir(dir.path());
    let store = airlock_server::secrets::open_store(&config).await?;
    let operator = Principal::local_operator();
    let slug = TenantSlug::parse("bench")?;
    store.create_tenant(&operator, &slug, "").await?;
    let scope = store.operator_scope(&operator, &slug).await?;

    let started = Instant::now();
    let entries: Vec<VaultEntry> = (0..args.rows)
        .map(|i| VaultEntry {
            token: format!("EMAIL_{i:012x}"),
            kind: "email".into(),
            value: format!("customer.number.{i}@example.com"),
        })
        .collect();
    for chunk in entries.chunks(1000) {
        store.remember_tokens(&scope, chunk, Duration::from_secs(86_400)).await?;
    }
    let events = args.rows / 10;
    let mut pending = Vec::with_capacity(256);
    for i in 0..events {
        let metadata: Map<String, Value> = json!({
            "alias": "fast", "upstream": "openai-primary", "model": "gpt-4o-mini", "status": 200,
            "input_tokens": 1200 + i % 300, "output_tokens": 300 + i % 90, "cost_micros": 4512,
            "latency_ms": 840 + i % 400, "redacted": {"email": 2, "phone": 1}, "outcome": "ok"
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let (store, scope) = (store.clone(), scope.clone());
        pending.push(tokio::spawn(async move { store.record(&scope, "model.call", &[], metadata).await }));
        if pending.len() == 256 {
            for task in pending.drain(..) {
                task.await??;
            }
        }
    }
    for task in pending {
        task.await??;
    }
    println!(
        "filled tenant: {} sealed values and {events} audit entries in {:.1}s",
        args.rows,
        started.elapsed().as_secs_f64()
    );

    let options = RotateOptions { dry_run: false, grace: Duration::ZERO, batch: args.batch, all: false };
    let started = Instant::now();
    let report = store.rotate_tenant_dek(&operator, &scope, options, &|_| {}).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "data-key rotation: {} rows re-encrypted in {secs:.2}s = {:.0} rows/s (batch {}, finished: {})",
        report.reencrypted,
        report.reencrypted as f64 / secs,
        args.batch,
        report.finished()
    );

    let (sender, mut chunks) = tokio::sync::mpsc::channel(8);
    let started = Instant::now();
    let export = {
        let (store, scope) = (store.clone(), scope.clone());
        tokio::spawn(async move { store.export_tenant(&Principal::local_operator(), &scope, sender).await })
    };
    let mut received = 0u64;
    while let Some(chunk) = chunks.recv().await {
        received += chunk.bytes.len() as u64;
    }
    let summary = export.await??;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "export: {} rows, {:.1} MB of JSON Lines into a {:.1} MB archive in {secs:.2}s = {:.1} MB/s of data ({:.1} MB/s of archive)",
        summary.rows,
        summary.uncompressed as f64 / 1e6,
        received as f64 / 1e6,
        summary.uncompressed as f64 / 1e6 / secs,
        received as f64 / 1e6 / secs
    );
    store.close().await;
    Ok(())
}
