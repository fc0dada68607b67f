//! How each provider kind is addressed, what a configuration may hold, and that the key stays
//! where it belongs.

use serde_json::json;

use super::*;

const KEY: &str = "sk-test-0123456789abcdef";

fn upstream(kind: ProviderKind, base_url: &str) -> Upstream {
    Upstream {
        id: "tenant-1/primary".into(),
        kind,
        base_url: base_url.into(),
        model: "gpt-4o".into(),
        api_version: (kind == ProviderKind::AzureOpenAi).then(|| "2024-10-21".into()),
        api_key: Some(SecretString::from(KEY)),
    }
}

fn endpoint(kind: ProviderKind, base_url: &str) -> String {
    upstream(kind, base_url).endpoint().unwrap().to_string()
}

fn header<'a>(prepared: &'a Prepared, name: &str) -> Option<&'a str> {
    prepared.headers.get(name).map(|v| v.to_str().unwrap())
}

fn body(prepared: &Prepared) -> Value {
    serde_json::from_slice(&prepared.body).unwrap()
}

#[test]
fn kinds_parse_from_their_configuration_names() {
    for kind in [ProviderKind::OpenAi, ProviderKind::AzureOpenAi, ProviderKind::Anthropic] {
        assert_eq!(ProviderKind::parse(kind.as_str()), Some(kind));
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        assert_eq!(serde_json::from_value::<ProviderKind>(json!(kind.as_str())).unwrap(), kind);
    }
    assert_eq!(ProviderKind::parse("open_ai"), Some(ProviderKind::OpenAi));
    assert_eq!(ProviderKind::parse("azure_open_ai"), Some(ProviderKind::AzureOpenAi));
    assert_eq!(serde_json::from_value::<ProviderKind>(json!("open_ai")).unwrap(), ProviderKind::OpenAi);
    assert_eq!(ProviderKind::parse("OpenAI"), None);
    assert_eq!(ProviderKind::parse(""), None);
    assert!(ProviderKind::Anthropic.dialect_is_anthropic());
    assert!(!ProviderKind::OpenAi.dialect_is_anthropic());
    assert!(!ProviderKind::AzureOpenAi.dialect_is_anthropic());
}

#[test]
fn openai_compatible_endpoints_append_chat_completions() {
    assert_eq!(
        endpoint(ProviderKind::OpenAi, "https://api.openai.com/v1"),
        "https://api.openai.com/v1/chat/completions"
    );
    assert_eq!(
        endpoint(ProviderKind::OpenAi, "https://api.openai.com/v1/"),
        "https://api.openai.com/v1/chat/completions"
    );
    assert_eq!(
        endpoint(ProviderKind::OpenAi, "http://127.0.0.1:11434/v1"),
        "http://127.0.0.1:11434/v1/chat/completions"
    );
}

#[test]
fn azure_endpoints_name_the_deployment_and_the_api_version() {
    assert_eq!(
        endpoint(ProviderKind::AzureOpenAi, "https://myres.openai.azure.com"),
        "https://myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        endpoint(ProviderKind::AzureOpenAi, "https://myres.openai.azure.com/"),
        "https://myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    );
}

#[test]
fn anthropic_endpoints_accept_the_base_with_or_without_v1() {
    for base in [
        "https://api.anthropic.com",
        "https://api.anthropic.com/",
        "https://api.anthropic.com/v1",
        "https://api.anthropic.com/v1/",
    ] {
        assert_eq!(
            endpoint(ProviderKind::Anthropic, base),
            "https://api.anthropic.com/v1/messages",
            "{base}"
        );
    }
    assert_eq!(
        endpoint(ProviderKind::Anthropic, "https://gw.example/anthropic"),
        "https://gw.example/anthropic/v1/messages"
    );
}

#[test]
fn openai_requests_carry_a_sensitive_bearer_key_and_the_upstream_model() {
    let request = json!({"model": "alias", "messages": [], "stream": true});
    let prepared =
        upstream(ProviderKind::OpenAi, "https://api.openai.com/v1").prepare(&request, false, &[]).unwrap();

    assert_eq!(header(&prepared, "authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert!(prepared.headers.get("authorization").unwrap().is_sensitive());
    assert_eq!(header(&prepared, "content-type"), Some("application/json"));
    assert_eq!(header(&prepared, "accept"), Some("application/json"));
    assert_eq!(
        body(&prepared),
        json!({"model": "gpt-4o", "messages": []}),
        "the stream flag agrees with `stream`"
    );

    let streamed =
        upstream(ProviderKind::OpenAi, "https://api.openai.com/v1").prepare(&request, true, &[]).unwrap();
    assert_eq!(header(&streamed, "accept"), Some("text/event-stream"));
    assert_eq!(body(&streamed)["stream"], true);
}

#[test]
fn openai_without_a_key_sends_no_authorization() {
    let mut local = upstream(ProviderKind::OpenAi, "http://127.0.0.1:11434/v1");
    local.api_key = None;
    local.validate().unwrap();
    let prepared = local.prepare(&json!({}), false, &[]).unwrap();
    assert_eq!(header(&prepared, "authorization"), None);
}

#[test]
fn azure_requests_carry_api_key_and_no_model() {
    let prepared = upstream(ProviderKind::AzureOpenAi, "https://myres.openai.azure.com")
        .prepare(&json!({"model": "alias", "messages": []}), false, &[])
        .unwrap();
    assert_eq!(header(&prepared, "api-key"), Some(KEY));
    assert!(prepared.headers.get("api-key").unwrap().is_sensitive());
    assert_eq!(header(&prepared, "authorization"), None);
    assert_eq!(body(&prepared), json!({"messages": []}));
}

#[test]
fn anthropic_requests_carry_x_api_key_a_version_and_only_the_allowed_caller_headers() {
    let anthropic = upstream(ProviderKind::Anthropic, "https://api.anthropic.com");
    let prepared = anthropic.prepare(&json!({"model": "alias"}), false, &[]).unwrap();
    assert_eq!(header(&prepared, "x-api-key"), Some(KEY));
    assert!(prepared.headers.get("x-api-key").unwrap().is_sensitive());
    assert_eq!(header(&prepared, "anthropic-version"), Some(DEFAULT_ANTHROPIC_VERSION));
    assert_eq!(body(&prepared)["model"], "gpt-4o");

    let extra = [
        ("anthropic-version".to_owned(), "2024-01-01".to_owned()),
        ("anthropic-beta".to_owned(), "tools-2024-05-16".to_owned()),
        ("x-api-key".to_owned(), "caller".to_owned()),
        ("content-type".to_owned(), "text/plain".to_owned()),
        ("anthropic-beta\r\nx-evil".to_owned(), "1".to_owned()),
    ];
    let prepared = anthropic.prepare(&json!({}), false, &extra).unwrap();
    assert_eq!(header(&prepared, "anthropic-version"), Some("2024-01-01"));
    assert_eq!(header(&prepared, "anthropic-beta"), Some("tools-2024-05-16"));
    assert_eq!(header(&prepared, "x-api-key"), Some(KEY));
    assert_eq!(header(&prepared, "content-type"), Some("application/json"));
    assert_eq!(prepared.headers.len(), 5, "{:?}", prepared.headers.keys().collect::<Vec<_>>());
}

#[test]
fn a_body_that_is_not_an_object_is_refused() {
    let openai = upstream(ProviderKind::OpenAi, "https://api.openai.com/v1");
    assert!(openai.prepare(&json!("text"), false, &[]).is_err());
}

#[test]
fn base_urls_must_be_plain_http_or_https() {
    let problem = |base: &str| upstream(ProviderKind::OpenAi, base).validate().unwrap_err();
    assert!(problem("ftp://example.com/v1").contains("http or https"));
    assert!(problem("not a url").contains("not a valid URL"));
    assert!(problem("https://example.com/v1?key=1").contains("query or fragment"));
    assert!(problem("https://example.com/v1#x").contains("query or fragment"));
    let userinfo = problem("https://user:hunter2@example.com/v1");
    assert!(userinfo.contains("user name or password") && !userinfo.contains("hunter2"), "{userinfo}");
    upstream(ProviderKind::OpenAi, "http://localhost:8000/v1").validate().unwrap();
}

#[test]
fn each_kind_checks_what_it_needs() {
    let mut azure = upstream(ProviderKind::AzureOpenAi, "https://myres.openai.azure.com");
    azure.api_version = None;
    assert!(azure.validate().unwrap_err().contains("needs an `api_version`"));
    azure.api_version = Some("2024-10-21&x=1".into());
    assert!(azure.validate().unwrap_err().contains("api_version"));
    azure.api_version = Some("2024-10-01-preview".into());
    azure.validate().unwrap();
    for bad in ["..", "a/b", "gpt 4o", "a?b"] {
        azure.model = bad.into();
        assert!(azure.validate().unwrap_err().contains("deployment name"), "{bad}");
    }
    azure.model = "gpt-4o".into();
    azure.api_key = None;
    assert!(azure.validate().unwrap_err().contains("needs an API key"));

    let mut anthropic = upstream(ProviderKind::Anthropic, "https://api.anthropic.com");
    anthropic.api_key = None;
    assert!(anthropic.validate().unwrap_err().contains("needs an API key"));

    let mut openai = upstream(ProviderKind::OpenAi, "https://api.openai.com/v1");
    openai.api_version = Some("2024-10-21".into());
    assert!(openai.validate().unwrap_err().contains("only used by `azure_openai`"));
}

#[test]
fn every_problem_is_reported_at_once_without_the_key() {
    let bad = Upstream {
        id: String::new(),
        kind: ProviderKind::OpenAi,
        base_url: "ftp://x".into(),
        model: " ".into(),
        api_version: None,
        api_key: Some(SecretString::from("sk-with\nnewline")),
    };
    let problems = bad.validate().unwrap_err();
    assert_eq!(problems.split("; ").count(), 4, "{problems}");
    assert!(!problems.contains("sk-with"), "{problems}");
}

#[test]
fn a_bad_key_is_reported_once() {
    let mut openai = upstream(ProviderKind::OpenAi, "https://api.openai.com/v1");
    openai.api_key = Some(SecretString::from("sk-with\nnewline"));
    assert_eq!(openai.validate().unwrap_err(), BAD_KEY);
}

#[test]
fn debug_never_shows_the_key() {
    let shown = format!("{:?}", upstream(ProviderKind::OpenAi, "https://api.openai.com/v1"));
    assert!(!shown.contains(KEY), "{shown}");
    let prepared =
        upstream(ProviderKind::OpenAi, "https://api.openai.com/v1").prepare(&json!({}), false, &[]).unwrap();
    assert!(!format!("{:?}", prepared.headers).contains(KEY));
}

#[test]
fn an_echoed_key_is_scrubbed() {
    let openai = upstream(ProviderKind::OpenAi, "https://api.openai.com/v1");
    let echoed = Bytes::from(format!("{KEY} bad key {KEY}!"));
    assert_eq!(openai.scrub(echoed), Bytes::from("[REDACTED] bad key [REDACTED]!"));
    assert_eq!(openai.scrub(Bytes::from("nothing")), Bytes::from("nothing"));
    assert_eq!(openai.scrub_text(&format!("key={KEY}")), "key=[REDACTED]");
}

#[test]
fn one_line_flattens_and_cuts() {
    assert_eq!(one_line("a\n\tb\u{202E}c  ", 10), "a b c");
    assert_eq!(one_line("  leading", 10), "leading");
    assert_eq!(one_line("abcdef", 3), "abc…");
    assert_eq!(one_line("ab cd", 4), "ab c…");
    assert_eq!(one_line("ab cd", 3), "ab…");
    assert_eq!(one_line("", 3), "");
}
