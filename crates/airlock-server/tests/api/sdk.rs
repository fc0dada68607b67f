//! The official `openai` and `anthropic` Python SDKs against the gateway, with a provider on
//! loopback behind it: what the SDKs see is what the providers would have answered, with the
//! values back in place, and what the provider saw carries only tokens.
//!
//! The SDKs are installed by `.ci/run` (`pip install openai anthropic`); `AIRLOCK_PYTHON`
//! names another interpreter.

use std::process::Command;

use airlock_types::Role;
use serde_json::json;

use crate::common::TestApp;
use crate::common::provider::Provider;

fn run_script(script: &str, base: &str, key: &str) {
    let python = std::env::var("AIRLOCK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(&python)
        .arg(&path)
        .env("AIRLOCK_BASE_URL", base)
        .env("AIRLOCK_KEY", key)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}`: {e}"));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_official_sdks_work_unchanged_and_the_provider_sees_only_tokens() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let provider = Provider::start().await;
    let openai = json!({"routes": [{"provider": "openai", "base_url": format!("{}/v1", provider.base), "model": "gpt-test"}]});
    let anthropic = json!({"routes": [{"provider": "anthropic", "base_url": provider.base, "model": "claude-test", "api_key": "sk-ant-test"}]});
    app.put("/v1/model-routes/fast", admin, &openai).await.expect_status(200);
    app.put("/v1/model-routes/claude", admin, &anthropic).await.expect_status(200);
    let settings =
        json!({"max_tokens_per_call": 4096, "allow": {"roles": {"member": ["fast"]}, "agents": ["claude"]}});
    app.put("/v1/model-settings", admin, &settings).await.expect_status(200);
    let member = app.user(&tenant.scope, "dev@acme.example", &[Role::Member]).await;
    let agent = app.agent(&tenant.scope, "assistant").await;

    let base = app.base.clone();
    let (member_key, agent_key) = (member.key.secret.clone(), agent.key.secret.clone());
    tokio::task::spawn_blocking(move || {
        run_script("openai_client.py", &base, &member_key);
        run_script("anthropic_client.py", &base, &agent_key);
    })
    .await
    .unwrap();

    let received = provider.received();
    assert!(received.len() >= 6, "{} requests reached the provider", received.len());
    for request in &received {
        let body = request.body.to_string();
        for value in ["ana.lopez@example.com", "7123 4567", "4111 1111 1111 1111"] {
            assert!(!body.contains(value), "`{value}` reached the provider: {body}");
        }
    }
}
