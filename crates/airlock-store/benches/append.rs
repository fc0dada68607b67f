//! Durable audit appends per second with group commit (report, do not assert).
//!
//! Each iteration appends 20,000 events from N concurrent callers to one tenant's log on a
//! real SQLite file (WAL, `synchronous = FULL`); every append returns only after the
//! transaction holding it is committed.
//!
//! `cargo bench -p airlock-store --bench append`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, reason = "benchmark")]

use std::sync::Arc;
use std::time::Duration;

use airlock_crypto::KeyedHasher;
use airlock_store::{AuditOptions, Principal, SessionPolicy, Store, StoreOptions, TenantScope};
use airlock_types::TenantSlug;
use airlock_vault::provider::LocalKek;
use airlock_vault::{ConnectOptions, Keyring};
use divan::counter::ItemsCount;
use serde_json::{Map, Value};

fn main() {
    divan::main();
}

const APPENDS: u64 = 20_000;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: Store,
    scope: TenantScope,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir =
        tempfile::tempdir_in(std::env::var_os("AIRLOCK_BENCH_DIR").unwrap_or_else(|| ".".into())).unwrap();
    let (store, scope) = runtime.block_on(async {
        let store = Store::open(
            StoreOptions {
                keyring: Keyring::new(
                    Arc::new(LocalKek::from_file(&dir.path().join("kek.key"), true).unwrap()),
                    vec![],
                ),
                connect: ConnectOptions::default(),
                key_cache_ttl: Duration::from_secs(60),
                audit: AuditOptions { checkpoint_every: 1000, checkpoint_interval: Duration::from_secs(10) },
                data_dir: dir.path().to_path_buf(),
                sessions: SessionPolicy {
                    lifetime: Duration::from_secs(60),
                    idle_timeout: Duration::from_secs(60),
                },
                log_statements: false,
            },
            KeyedHasher::new(b"benchmark server key, 32 bytes or more".to_vec().into()),
        )
        .await
        .unwrap();
        let operator = Principal::local_operator();
        let slug = TenantSlug::parse("bench").unwrap();
        store.create_tenant(&operator, &slug, "").await.unwrap();
        let scope = store.operator_scope(&operator, &slug).await.unwrap();
        (store, scope)
    });
    Fixture { runtime, store, scope, _dir: dir }
}

/// `callers` concurrent tasks share 20,000 appends.
#[divan::bench(args = [1, 16, 256, 1024], sample_count = 5)]
fn durable_appends(bencher: divan::Bencher, callers: u64) {
    let f = fixture();
    bencher.counter(ItemsCount::new(APPENDS)).bench_local(|| {
        f.runtime.block_on(async {
            let mut tasks = Vec::new();
            for caller in 0..callers {
                let (store, scope) = (f.store.clone(), f.scope.clone());
                tasks.push(tokio::spawn(async move {
                    for n in 0..APPENDS / callers {
                        let mut metadata = Map::new();
                        metadata.insert("caller".into(), Value::from(caller));
                        metadata.insert("n".into(), Value::from(n));
                        store.record(&scope, "bench.event", &[("thing", "x")], metadata).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
    });
}
