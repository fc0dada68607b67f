//! Model routes with sealed provider keys, gateway settings, and budgets that hold under
//! concurrency.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_store::{BudgetLimits, NewModelRoute, Reserve, Settle, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};

use crate::common::{open_store, tenant};

async fn open(dir: &Path) -> Store {
    open_store(dir, 100, Duration::from_secs(60)).await
}

fn route(provider: &str, base_url: &str, key: Option<&str>) -> NewModelRoute {
    NewModelRoute {
        provider: provider.to_owned(),
        base_url: base_url.to_owned(),
        upstream_model: "gpt-4o-mini".to_owned(),
        api_version: None,
        api_key: key.map(|k| SecretString::from(k.to_owned())),
    }
}

fn call(principal: &str, tokens: i64, ucents: i64) -> Reserve {
    Reserve { principal: principal.to_owned(), alias: "fast".to_owned(), tokens, ucents }
}

#[tokio::test]
async fn routes_keep_their_keys_sealed_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let chain = vec![
        route("openai", "https://api.openai.com/v1", Some("sk-primary-0123456789")),
        route("openai", "http://127.0.0.1:11434/v1", None),
    ];
    let alias = store.put_model_routes(&acme, "fast", chain, 15, 60).await.unwrap();
    assert_eq!(alias.routes.len(), 2);
    assert!(alias.routes[0].has_key && !alias.routes[1].has_key);
    assert!(!serde_json::to_string(&alias).unwrap().contains("sk-primary"));

    // Rewriting the chain without the key keeps it for the same provider and URL.
    let again = vec![route("openai", "https://api.openai.com/v1", None)];
    store.put_model_routes(&acme, "fast", again, 15, 60).await.unwrap();
    let opened = store.open_model_routes(&acme, "fast").await.unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].api_key.as_ref().unwrap().expose_secret(), "sk-primary-0123456789");
    // …but not for a different URL.
    let moved = vec![route("openai", "https://evil.example.com/v1", None)];
    store.put_model_routes(&acme, "fast", moved, 15, 60).await.unwrap();
    assert!(store.open_model_routes(&acme, "fast").await.unwrap()[0].api_key.is_none());

    let globex = tenant(&store, "globex").await;
    assert!(store.model_aliases(&globex).await.unwrap().is_empty());
    store.delete_model_alias(&acme, "fast").await.unwrap();
    assert!(matches!(store.delete_model_alias(&acme, "fast").await, Err(StoreError::NotFound { .. })));
}

#[tokio::test]
async fn parallel_reservations_never_overspend_the_monthly_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).await);
    let acme = tenant(&store, "acme").await;
    // Room for exactly 7 calls of 1 cent each.
    let limits = BudgetLimits { tenant_monthly_ucents: Some(7_000_000), ..BudgetLimits::default() };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (store, scope) = (Arc::clone(&store), acme.clone());
        tasks.push(tokio::spawn(async move {
            store.reserve_model_call(&scope, &call(&format!("agt_{i}"), 100, 1_000_000), &limits).await
        }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => granted += 1,
            Err(StoreError::Refused(message)) => assert!(message.contains("monthly"), "{message}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(granted, 7);
}

#[tokio::test]
async fn settled_usage_replaces_the_reservation_and_released_calls_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let limits = BudgetLimits { principal_daily_tokens: Some(1000), ..BudgetLimits::default() };
    let first = store.reserve_model_call(&acme, &call("usr_a", 900, 0), &limits).await.unwrap();
    let refused = store.reserve_model_call(&acme, &call("usr_a", 200, 0), &limits).await;
    assert!(
        matches!(&refused, Err(StoreError::Refused(m)) if m.contains("daily token budget")),
        "{refused:?}"
    );
    // Another caller has its own budget.
    store.reserve_model_call(&acme, &call("usr_b", 200, 0), &limits).await.unwrap();
    let used = Settle { input_tokens: 50, output_tokens: 50, cost_ucents: 0 };
    store.finish_model_call(&acme, Some(&first), Some(used), &[], Default::default()).await.unwrap();
    let second = store.reserve_model_call(&acme, &call("usr_a", 800, 0), &limits).await.unwrap();
    store.finish_model_call(&acme, Some(&second), None, &[], Default::default()).await.unwrap();
    store.reserve_model_call(&acme, &call("usr_a", 850, 0), &limits).await.unwrap();
    assert_eq!(store.model_spend(&acme, "usr_a").await.unwrap(), (0, 100));
}

#[tokio::test]
async fn a_spend_spike_trips_the_breaker_for_the_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let acme = tenant(&store, "acme").await;
    let limits = BudgetLimits {
        principal_ucents_per_minute: Some(3_000_000),
        breaker_cooldown_ms: 60_000,
        ..BudgetLimits::default()
    };
    for _ in 0..3 {
        store.reserve_model_call(&acme, &call("agt_x", 10, 1_000_000), &limits).await.unwrap();
    }
    let tripped = store.reserve_model_call(&acme, &call("agt_x", 10, 1_000_000), &limits).await;
    assert!(matches!(&tripped, Err(StoreError::Refused(m)) if m.contains("breaker")), "{tripped:?}");
    // Even a free call is refused while the breaker is open; other callers are not.
    let free = store.reserve_model_call(&acme, &call("agt_x", 1, 0), &limits).await;
    assert!(matches!(&free, Err(StoreError::Refused(m)) if m.contains("breaker is open")), "{free:?}");
    store.reserve_model_call(&acme, &call("agt_y", 10, 1_000_000), &limits).await.unwrap();
}
