use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<RawConfig, ConfigError> {
    load_from(None, env(pairs), &RawConfig::default())
}

const GOOD_KEY: &str = "kJ3n9Qx7vR2mT8wZ5pL1cH6yB4dF0gAe";

fn production_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut pairs = vec![
        ("AIRLOCK_MODE", "production"),
        ("AIRLOCK_PUBLIC_URL", "https://airlock.example.com"),
        ("AIRLOCK_SECRETS__SERVER_KEY", GOOD_KEY),
        ("AIRLOCK_KEY_PROVIDER__KIND", "file"),
        ("AIRLOCK_KEY_PROVIDER__PATH", "/etc/airlock/kek.key"),
    ];
    for (k, v) in extra {
        pairs.retain(|(key, _)| key != k);
        pairs.push((k, v));
    }
    pairs
}

fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected invalid configuration, got {other:?}"),
    }
}

#[test]
fn the_zero_configuration_start_is_valid_dev_mode() {
    let config = load_env(&[]).unwrap().validate().unwrap();
    assert_eq!(config.mode, Mode::Dev);
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.public_url, "http://127.0.0.1:8080");
    assert_eq!(config.data_dir, PathBuf::from("airlock-data"));
    assert!(config.server_key.is_none());
}

#[test]
fn the_test_default_is_valid() {
    let dir = Path::new("/tmp/x");
    assert_eq!(Config::for_data_dir(dir).data_dir, dir);
}

#[test]
fn a_complete_production_configuration_is_accepted() {
    let config = load_env(&production_env(&[])).unwrap().validate().unwrap();
    assert_eq!(config.mode, Mode::Production);
    assert!(config.public_url_is_https);
}

#[test]
fn environment_variables_override_the_file_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("airlock.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from/file\"\n[server]\nlisten = \"127.0.0.1:1111\"\nrequest_timeout_secs = 5\n",
    )
    .unwrap();
    let flags = RawConfig {
        server: RawServer { listen: Some("127.0.0.1:3333".into()), ..RawServer::default() },
        ..RawConfig::default()
    };
    let raw = load_from(
        Some(&file),
        env(&[("AIRLOCK_SERVER__LISTEN", "127.0.0.1:2222"), ("AIRLOCK_DATA_DIR", "/from/env")]),
        &flags,
    )
    .unwrap();
    let config = raw.validate().unwrap();
    assert_eq!(config.listen.port(), 3333);
    assert_eq!(config.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.request_timeout, Duration::from_secs(5));
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("server.key");
    std::fs::write(&secret, format!("{GOOD_KEY}\n")).unwrap();
    let path = secret.to_str().unwrap().to_owned();
    let raw =
        load_from(None, env(&[("AIRLOCK_SECRETS__SERVER_KEY_FILE", &path)]), &RawConfig::default()).unwrap();
    assert_eq!(raw.secrets.server_key.as_deref(), Some(GOOD_KEY));
}

#[test]
fn a_missing_secret_file_is_named() {
    let err = load_env(&[("AIRLOCK_SECRETS__SERVER_KEY_FILE", "/nonexistent/key")]).unwrap_err();
    assert!(err.to_string().contains("AIRLOCK_SECRETS__SERVER_KEY_FILE"), "{err}");
}

#[test]
fn unknown_keys_are_refused_with_their_source() {
    let err = load_env(&[("AIRLOCK_SERVER__LISTN", "127.0.0.1:1")]).unwrap_err();
    assert!(err.to_string().contains("AIRLOCK_SERVER__LISTN"), "{err}");
    assert!(err.to_string().contains("listn"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("airlock.toml");
    std::fs::write(&file, "[server]\nport = 80\n").unwrap();
    let err = load_from(Some(&file), Vec::new(), &RawConfig::default()).unwrap_err();
    assert!(err.to_string().contains("airlock.toml") && err.to_string().contains("port"), "{err}");
}

#[test]
fn wrong_types_and_bad_toml_are_refused() {
    assert!(load_env(&[("AIRLOCK_SERVER__REQUEST_TIMEOUT_SECS", "soon")]).is_err());
    assert!(load_env(&[("AIRLOCK_MODE", "staging")]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("airlock.toml");
    std::fs::write(&file, "mode = \n").unwrap();
    assert!(load_from(Some(&file), Vec::new(), &RawConfig::default()).is_err());
    assert!(load_from(Some(&dir.path().join("missing.toml")), Vec::new(), &RawConfig::default()).is_err());
}

#[test]
fn production_refuses_a_missing_secret_url_and_key_provider_and_names_each() {
    let problems = problems(load_env(&[("AIRLOCK_MODE", "production")]).unwrap().validate());
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems.iter().any(|p| p.starts_with("public_url")));
    assert!(problems.iter().any(|p| p.starts_with("secrets.server_key")));
    assert!(problems.iter().any(|p| p.starts_with("key_provider")));
}

#[test]
fn production_refuses_short_and_default_secrets() {
    for bad in [
        "short",
        "changeme",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "replace-me-with-at-least-32-random-bytes",
    ] {
        let problems =
            problems(load_env(&production_env(&[("AIRLOCK_SECRETS__SERVER_KEY", bad)])).unwrap().validate());
        assert!(problems.iter().all(|p| p.starts_with("secrets.server_key")), "{bad}: {problems:#?}");
        assert_eq!(problems.len(), 1, "{bad}");
    }
}

#[test]
fn production_refuses_plain_http_except_on_loopback() {
    let problems = problems(
        load_env(&production_env(&[("AIRLOCK_PUBLIC_URL", "http://airlock.example.com")]))
            .unwrap()
            .validate(),
    );
    assert!(problems[0].contains("plain http"), "{problems:#?}");
    for loopback in ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"] {
        let raw = load_env(&production_env(&[("AIRLOCK_PUBLIC_URL", loopback)])).unwrap();
        assert!(raw.validate().is_ok(), "{loopback}");
    }
}

#[test]
fn production_refuses_debug_options() {
    let problems = problems(
        load_env(&production_env(&[
            ("AIRLOCK_DEBUG__VERBOSE_ERRORS", "true"),
            ("AIRLOCK_DEBUG__LOG_SQL", "true"),
        ]))
        .unwrap()
        .validate(),
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let problems = problems(
        load_env(&[
            ("AIRLOCK_MODE", "production"),
            ("AIRLOCK_PUBLIC_URL", "http://example.com"),
            ("AIRLOCK_SECRETS__SERVER_KEY", "tiny"),
            ("AIRLOCK_SERVER__LISTEN", "not an address"),
            ("AIRLOCK_DEBUG__LOG_SQL", "true"),
            ("AIRLOCK_LOG__FORMAT", "xml"),
            ("AIRLOCK_SERVER__BODY_LIMIT_BYTES", "0"),
        ])
        .unwrap()
        .validate(),
    );
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

#[test]
fn dev_mode_accepts_what_production_refuses() {
    let raw = load_env(&[
        ("AIRLOCK_PUBLIC_URL", "http://airlock.internal"),
        ("AIRLOCK_DEBUG__VERBOSE_ERRORS", "true"),
    ])
    .unwrap();
    assert!(raw.validate().is_ok());
}

#[test]
fn every_key_provider_is_configured_by_its_fields_and_missing_ones_are_named() {
    use airlock_vault::ProviderSpec;
    let transit = load_env(&[
        ("AIRLOCK_KEY_PROVIDER__KIND", "vault_transit"),
        ("AIRLOCK_KEY_PROVIDER__ADDRESS", "https://vault.internal:8200"),
        ("AIRLOCK_KEY_PROVIDER__KEY", "airlock"),
        ("AIRLOCK_KEY_PROVIDER__CACHE_TTL_SECS", "15"),
    ])
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        transit.key_provider,
        ProviderSpec::VaultTransit {
            address: "https://vault.internal:8200".into(),
            mount: "transit".into(),
            key: "airlock".into(),
            namespace: None,
            token_file: None,
        }
    );
    assert_eq!(transit.key_cache_ttl, Duration::from_secs(15));
    let kms = load_env(&[
        ("AIRLOCK_KEY_PROVIDER__KIND", "aws_kms"),
        ("AIRLOCK_KEY_PROVIDER__KEY_ID", "alias/airlock"),
    ])
    .unwrap()
    .validate()
    .unwrap();
    assert!(matches!(kms.key_provider, ProviderSpec::AwsKms { ref key_id, .. } if key_id == "alias/airlock"));

    for (kind, missing) in [
        ("vault_transit", vec!["key_provider.address", "key_provider.key"]),
        ("aws_kms", vec!["key_provider.key_id"]),
        ("azure_key_vault", vec!["key_provider.vault_url", "key_provider.key"]),
        ("gcp_kms", vec!["key_provider.key_name"]),
        ("env", vec!["key_provider.variable"]),
    ] {
        let found = problems(load_env(&[("AIRLOCK_KEY_PROVIDER__KIND", kind)]).unwrap().validate());
        for field in missing {
            assert!(found.iter().any(|p| p.starts_with(field)), "{kind}: {found:?}");
        }
    }
    let unknown = problems(load_env(&[("AIRLOCK_KEY_PROVIDER__KIND", "hsm")]).unwrap().validate());
    assert!(unknown[0].contains("`hsm` is not a key provider"), "{unknown:?}");
}

#[test]
fn previous_key_providers_are_read_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("airlock.toml");
    std::fs::write(
        &file,
        "[key_provider]\nkind = \"file\"\npath = \"/etc/airlock/kek-2026.key\"\n\n\
         [[key_provider.previous]]\nkind = \"file\"\npath = \"/etc/airlock/kek-2025.key\"\n\n\
         [[key_provider.previous]]\nkind = \"aws_kms\"\nkey_id = \"alias/old\"\n",
    )
    .unwrap();
    let config = load_from(Some(&file), Vec::new(), &RawConfig::default()).unwrap().validate().unwrap();
    assert_eq!(config.previous_key_providers.len(), 2);
    assert_eq!(
        config.previous_key_providers[0],
        airlock_vault::ProviderSpec::File { path: "/etc/airlock/kek-2025.key".into() }
    );
}

#[test]
fn imported_tools_are_refreshed_every_five_minutes_unless_disabled() {
    let config = load_env(&[]).unwrap().validate().unwrap();
    assert_eq!(config.mcp_refresh, Duration::from_secs(300));
    let off = load_env(&[("AIRLOCK_MCP__REFRESH_SECS", "0")]).unwrap().validate().unwrap();
    assert_eq!(off.mcp_refresh, Duration::ZERO, "0 disables the refresh");
    let often = load_env(&[("AIRLOCK_MCP__REFRESH_SECS", "5")]).unwrap().validate().unwrap();
    assert_eq!(often.mcp_refresh, Duration::from_secs(5));
}
