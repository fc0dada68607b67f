//! The tenant's audit log over HTTP: who may read it, the export that verifies offline with
//! the published keys, filtered listings (JSON Lines and CSV), signed checkpoints and Merkle
//! proofs, signing-key rotation, tenant isolation, and what the log records (refusals
//! included) and never records (secrets).

use std::time::Duration;

use airlock_audit::{Checkpoint, Entry, Hash, NoteVerifier, merkle, verify_export};
use airlock_types::Role;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::common::{DEFAULT_ADMIN, DEFAULT_TENANT, SESSION_COOKIE, TestApp, UNKNOWN_KEY_ID};

/// The CSV listing's header line.
const CSV_HEADER: &str = "index,time,type,actor_kind,actor_id,subject,metadata,chain_hash";

/// Every read route of the audit log, with query parameters that make it succeed on any
/// tenant's log (every log holds at least its `tenant.created` entry).
const READ_ROUTES: [&str; 6] = [
    "/v1/audit/export",
    "/v1/audit/entries",
    "/v1/audit/checkpoint",
    "/v1/audit/proofs/inclusion?index=0&size=1",
    "/v1/audit/proofs/consistency?from=1&to=1",
    "/v1/audit/keys",
];
const ROTATE: &str = "/v1/audit/keys/rotate";

// ---- helpers ------------------------------------------------------------------------------

/// The tenant's published verifier keys (current first), parsed as an offline verifier would.
async fn verifiers(app: &TestApp, key: &str) -> Vec<NoteVerifier> {
    let keys = app.get_ok("/v1/audit/keys", key).await;
    keys.as_array()
        .expect("a JSON array of keys")
        .iter()
        .map(|k| {
            NoteVerifier::parse(k["verifier"].as_str().expect("a verifier")).expect("a valid verifier key")
        })
        .collect()
}

/// Downloads the verifiable export.
async fn export(app: &TestApp, key: &str) -> String {
    let reply = app.get("/v1/audit/export", key).await;
    assert_eq!(reply.status, 200, "export: {}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    reply.text
}

/// The entry lines of an export, with their 1-based line numbers (the header is line 1).
fn export_entries(export: &str) -> Vec<(u64, Entry)> {
    export
        .lines()
        .zip(1u64..)
        .skip(1)
        .filter(|(line, _)| !line.starts_with("{\"checkpoint\":"))
        .map(|(line, number)| (number, serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))))
        .collect()
}

/// `GET /v1/audit/entries<query>` as JSON Lines, each line checked to be a canonical entry.
async fn entries(app: &TestApp, key: &str, query: &str) -> Vec<Entry> {
    let reply = app.get(&format!("/v1/audit/entries{query}"), key).await;
    assert_eq!(reply.status, 200, "entries{query}: {}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    reply
        .text
        .lines()
        .map(|line| {
            let entry: Entry = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(entry.canonical(true).unwrap(), line, "each line is the entry's canonical form");
            entry
        })
        .collect()
}

fn types(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.event_type.as_str()).collect()
}

fn indices(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

/// The latest signed checkpoint, as served.
async fn checkpoint_note(app: &TestApp, key: &str) -> String {
    let reply = app.get("/v1/audit/checkpoint", key).await;
    assert_eq!(reply.status, 200, "checkpoint: {}", reply.text);
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    reply.text
}

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array()
        .expect("a JSON array of hashes")
        .iter()
        .map(|h| Hash::from_base64(h.as_str().expect("a base64 hash")).expect("a 32-byte hash"))
        .collect()
}

/// Changes the last character of the first string found in `value`.
fn change_one_character(value: &mut Value) -> bool {
    match value {
        Value::String(text) => match text.pop() {
            Some(last) => {
                text.push(if last == 'x' { 'y' } else { 'x' });
                true
            }
            None => false,
        },
        Value::Array(items) => items.iter_mut().any(change_one_character),
        Value::Object(members) => members.values_mut().any(change_one_character),
        _ => false,
    }
}

/// Parses RFC 4180 CSV with CRLF row ends into rows of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => assert_eq!(chars.next(), Some('\n'), "rows end with CRLF"),
            (false, '\n') => panic!("a bare LF ends a row"),
            (false, c) => field.push(c),
        }
        if !quoted && c == '\r' {
            row.push(std::mem::take(&mut field));
            rows.push(std::mem::take(&mut row));
        }
    }
    assert!(row.is_empty() && field.is_empty(), "the last row ends with CRLF");
    rows
}

// ---- who may read the log -----------------------------------------------------------------

#[tokio::test]
async fn auditors_and_admins_can_use_every_audit_read_route() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;

    for key in [&auditor.key.secret, &tenant.admin.key.secret] {
        for route in READ_ROUTES {
            let reply = app.get(route, key).await;
            assert_eq!(reply.status, 200, "{route}: {}", reply.text);
        }
    }
}

#[tokio::test]
async fn only_an_admin_rotates_the_signing_key() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;

    let body = app.post(ROTATE, &auditor.key.secret, &json!({})).await.expect_problem(403, "forbidden");
    assert_eq!(body["detail"], "this needs the admin role");
    assert_eq!(app.get_ok("/v1/audit/keys", &auditor.key.secret).await.as_array().unwrap().len(), 1);

    let rotated = app.post(ROTATE, &tenant.admin.key.secret, &json!({})).await.expect_status(200);
    assert_eq!(rotated["version"], 2);
}

#[tokio::test]
async fn other_roles_agents_and_operators_are_refused_every_audit_route() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;
    let member = app.user(&tenant.scope, "mo@acme.example", &[Role::Member]).await;
    let viewer = app.user(&tenant.scope, "vic@acme.example", &[Role::Viewer]).await;
    let builder = app.user(&tenant.scope, "bob@acme.example", &[Role::Builder]).await;
    let approver = app.user(&tenant.scope, "ada@acme.example", &[Role::Approver]).await;
    let agent = app.agent(&tenant.scope, "bot").await;
    let operator = app.operator("ops").await;
    let refused = [
        (&member.id, &member.key.secret),
        (&viewer.id, &viewer.key.secret),
        (&builder.id, &builder.key.secret),
        (&approver.id, &approver.key.secret),
        (&agent.id, &agent.key.secret),
    ];
    let keys_before = app.get_ok("/v1/audit/keys", &auditor.key.secret).await;

    for (_, key) in refused {
        for route in READ_ROUTES {
            let body = app.get(route, key).await.expect_problem(403, "forbidden");
            assert_eq!(body["detail"], "this needs the auditor or admin role", "{route}");
        }
        let body = app.post(ROTATE, key, &json!({})).await.expect_problem(403, "forbidden");
        assert_eq!(body["detail"], "this needs the admin role");
    }
    for route in READ_ROUTES {
        app.get_anonymous(route).await.expect_problem(401, "unauthenticated");
        app.get(route, &operator.secret).await.expect_problem(403, "forbidden");
    }
    let anonymous = app.request(Method::POST, ROTATE).json(&json!({}));
    app.send(anonymous).await.expect_problem(401, "unauthenticated");
    app.post(ROTATE, &operator.secret, &json!({})).await.expect_problem(403, "forbidden");

    assert_eq!(app.get_ok("/v1/audit/keys", &auditor.key.secret).await, keys_before, "nothing rotated");

    // Every refusal of a tenant principal is on the record; operators belong to no tenant's
    // log, and anonymous callers are refused before they are anyone.
    let denied = entries(&app, &auditor.key.secret, "?type=access.denied").await;
    assert_eq!(denied.len(), refused.len() * (READ_ROUTES.len() + 1), "{:?}", types(&denied));
    for (i, entry) in denied.iter().enumerate() {
        let (actor, _) = refused[i / (READ_ROUTES.len() + 1)];
        let kind = if actor.starts_with("agt_") { "agent" } else { "user" };
        assert_eq!((entry.actor.kind.as_str(), &entry.actor.id), (kind, actor), "{entry:?}");
        let (method, route) = match READ_ROUTES.get(i % (READ_ROUTES.len() + 1)) {
            Some(route) => ("GET", route.split('?').next().unwrap()),
            None => ("POST", ROTATE),
        };
        assert_eq!(entry.metadata["method"], method, "{entry:?}");
        assert_eq!(entry.metadata["route"], route, "{entry:?}");
    }
}

// ---- the verifiable export ----------------------------------------------------------------

#[tokio::test]
async fn the_export_verifies_offline_and_records_what_the_admin_did_in_order() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let agent = app.post("/v1/agents", admin, &json!({ "name": "bot" })).await.expect_status(201);
    let agent_id = agent["id"].as_str().unwrap();
    let key =
        app.post("/v1/keys", admin, &json!({ "name": "bot key", "agent": "bot" })).await.expect_status(201);
    let key_id = key["key"]["id"].as_str().unwrap();
    app.delete(&format!("/v1/keys/{key_id}"), admin).await.expect_status(200);

    let export = export(&app, admin).await;
    let summary =
        verify_export(export.as_bytes(), &verifiers(&app, admin).await, None).expect("the export verifies");
    assert_eq!(summary.origin, format!("airlock/{}", tenant.id));

    let entries: Vec<Entry> = export_entries(&export).into_iter().map(|(_, e)| e).collect();
    assert_eq!(summary.entries, entries.len() as u64);
    assert_eq!(indices(&entries), (0..entries.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        types(&entries),
        [
            "tenant.created",
            "user.created",
            "key.created",
            "agent.created",
            "key.created",
            "key.revoked",
            "audit.exported",
        ]
    );
    // The fixtures were made by the local operator; everything since, by the admin.
    for entry in &entries[..3] {
        assert_eq!((entry.actor.kind.as_str(), entry.actor.id.as_str()), ("operator", "local"), "{entry:?}");
    }
    for entry in &entries[3..] {
        assert_eq!((entry.actor.kind.as_str(), &entry.actor.id), ("user", &tenant.admin.id), "{entry:?}");
    }
    assert_eq!(entries[1].subject["user"], tenant.admin.id);
    assert_eq!(entries[2].subject["key"], tenant.admin.key.id);
    assert_eq!(entries[3].subject["agent"], agent_id);
    assert_eq!(entries[3].metadata["name"], "bot");
    for entry in &entries[4..6] {
        assert_eq!(entry.subject["key"], key_id, "{entry:?}");
        assert_eq!(entry.subject["owner"], agent_id, "{entry:?}");
    }
    assert_eq!(entries[4].metadata["owner_kind"], "agent");
    assert_eq!(entries[6].metadata["format"], "jsonl", "the export records itself");
}

#[tokio::test]
async fn changing_one_character_of_any_entry_in_an_export_fails_verification_at_that_entry() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    app.post("/v1/agents", admin, &json!({ "name": "bot" })).await.expect_status(201);
    let key =
        app.post("/v1/keys", admin, &json!({ "name": "bot key", "agent": "bot" })).await.expect_status(201);
    app.delete(&format!("/v1/keys/{}", key["key"]["id"].as_str().unwrap()), admin).await.expect_status(200);
    let keys = verifiers(&app, admin).await;
    let export = export(&app, admin).await;
    verify_export(export.as_bytes(), &keys, None).expect("the untouched export verifies");
    let lines: Vec<&str> = export.lines().collect();

    let entries = export_entries(&export);
    assert!(entries.len() >= 7, "{}", entries.len());
    for (line_number, entry) in entries {
        let position = usize::try_from(line_number - 1).unwrap();
        let mut tampered = entry.clone();
        if !tampered.metadata.values_mut().any(change_one_character) {
            // Nothing to change in the metadata (`key.revoked` has none): change the subject.
            let value = tampered.subject.values_mut().next().expect("a subject");
            let mut text = Value::String(value.clone());
            assert!(change_one_character(&mut text));
            *value = text.as_str().unwrap().to_owned();
        }
        let edited = tampered.canonical(true).unwrap();
        let original = lines[position];
        assert_eq!(edited.len(), original.len());
        let differing = edited.bytes().zip(original.bytes()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1, "one character changed: {edited}");

        let mut copy: Vec<&str> = lines.clone();
        copy[position] = &edited;
        let forged = copy.join("\n") + "\n";
        let error = verify_export(forged.as_bytes(), &keys, None).expect_err("a tampered export fails");
        assert_eq!(error.index, Some(entry.index), "{error}");
        assert_eq!(error.line, line_number, "{error}");
        assert!(error.to_string().starts_with(&format!("entry {}, ", entry.index)), "{error}");
    }
}

#[tokio::test]
async fn no_secret_or_password_appears_in_the_export_or_the_csv() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    let admin = &tenant.admin.key.secret;
    let password = "a console password of some length";
    let wrong_guess = "a wrong password guess for pat";

    let created = app.post("/v1/keys", admin, &json!({ "name": "laptop" })).await.expect_status(201);
    let key_secret = created["secret"].as_str().unwrap().to_owned();
    assert!(key_secret.starts_with("alk_"), "{created}");
    app.post(
        "/v1/users",
        admin,
        &json!({ "email": "pat@localhost", "roles": ["auditor"], "password": password }),
    )
    .await
    .expect_status(201);
    app.login(DEFAULT_TENANT, "pat@localhost", wrong_guess).await.expect_problem(401, "unauthenticated");
    let login = app.login(DEFAULT_TENANT, "pat@localhost", password).await;
    login.expect_status(201);
    let cookie = login.header("set-cookie").unwrap();
    let session_token = cookie.split(';').next().unwrap().trim_start_matches(&format!("{SESSION_COOKIE}="));
    let admin_session = app.login_as_default_admin().await;
    app.get_ok("/v1/whoami", &key_secret).await;

    let export = export(&app, admin).await;
    let csv = app.get("/v1/audit/entries?format=csv", admin).await;
    assert_eq!(csv.status, 200, "{}", csv.text);
    let jsonl = app.get("/v1/audit/entries", admin).await;
    assert_eq!(jsonl.status, 200, "{}", jsonl.text);
    for event in ["key.created", "user.created", "auth.login_failed", "auth.login"] {
        assert!(export.contains(&format!("\"type\":\"{event}\"")), "{event} is recorded");
    }

    let secrets = [
        ("the API key", key_secret.as_str()),
        ("the API key's secret part", &key_secret[key_secret.len() - 43..]),
        ("the new user's password", password),
        ("a wrong password guess", wrong_guess),
        ("the first administrator's password", app.admin_password.as_str()),
        ("a session token", session_token),
        ("a session token's secret part", &session_token[session_token.len() - 43..]),
        ("the administrator's session token", admin_session.token.as_str()),
        ("a CSRF token", admin_session.csrf.as_str()),
        ("the fixture's API key", admin.as_str()),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 12, "{what} is long enough to mean something");
        for (name, text) in [("export", &export), ("CSV", &csv.text), ("JSONL", &jsonl.text)] {
            assert!(!text.contains(secret), "{what} appears in the {name}");
        }
    }
}

// ---- listing entries ----------------------------------------------------------------------

#[tokio::test]
async fn entries_are_canonical_json_lines_by_default_and_csv_on_request() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;
    let key = &auditor.key.secret;
    app.post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "bot" })).await.expect_status(201);

    let listed = entries(&app, key, "").await;
    assert_eq!(indices(&listed), (0..listed.len() as u64).collect::<Vec<_>>(), "all, oldest first");
    let mut prev = Hash::ZERO.to_hex();
    for entry in &listed {
        assert_eq!(entry.prev, prev, "the chain links: {entry:?}");
        assert_eq!(entry.compute_chain_hash().unwrap().to_hex(), entry.chain_hash);
        prev = entry.chain_hash.clone();
    }
    let read = listed.last().unwrap();
    assert_eq!(read.event_type, "audit.read", "the read is recorded before it is answered");
    assert_eq!((read.actor.kind.as_str(), &read.actor.id), ("user", &auditor.id));
    assert_eq!(read.metadata["format"], "jsonl");

    let reply = app.get("/v1/audit/entries?format=csv", key).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(reply.text.starts_with(&format!("{CSV_HEADER}\r\n")), "{}", reply.text);
    let rows = parse_csv(&reply.text);
    assert_eq!(rows[0].join(","), CSV_HEADER);
    assert_eq!(rows.len(), 1 + listed.len() + 1, "the header, the same entries, and the CSV read");
    for (row, entry) in rows[1..].iter().zip(&listed) {
        assert_eq!(row.len(), 8, "{row:?}");
        assert_eq!(row[0], entry.index.to_string());
        assert_eq!(row[1], entry.time);
        assert_eq!(row[2], entry.event_type);
        assert_eq!(row[3], entry.actor.kind);
        assert_eq!(row[4], entry.actor.id);
        assert_eq!(serde_json::from_str::<Value>(&row[5]).unwrap(), json!(entry.subject), "{row:?}");
        assert_eq!(serde_json::from_str::<Value>(&row[6]).unwrap(), Value::Object(entry.metadata.clone()));
        assert_eq!(row[7], entry.chain_hash);
    }
    let last = rows.last().unwrap();
    assert_eq!((last[0].as_str(), last[2].as_str()), (listed.len().to_string().as_str(), "audit.read"));
    assert_eq!(serde_json::from_str::<Value>(&last[6]).unwrap(), json!({ "format": "csv" }));

    let explicit = app.get("/v1/audit/entries?format=jsonl&limit=1", key).await;
    assert_eq!(explicit.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(explicit.text.lines().next().unwrap(), listed[0].canonical(true).unwrap());
}

#[tokio::test]
async fn entries_filter_by_type_family_exact_type_actor_and_limit() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;
    let key = &auditor.key.secret;
    app.post("/v1/agents", admin, &json!({ "name": "bot" })).await.expect_status(201);
    let created =
        app.post("/v1/keys", admin, &json!({ "name": "bot key", "agent": "bot" })).await.expect_status(201);
    app.delete(&format!("/v1/keys/{}", created["key"]["id"].as_str().unwrap()), admin)
        .await
        .expect_status(200);

    let all = entries(&app, key, "").await;
    let of_family: Vec<&Entry> = all.iter().filter(|e| e.event_type.starts_with("key.")).collect();
    assert_eq!(of_family.len(), 4, "two fixture keys, one key made and revoked: {:?}", types(&all));

    let family = entries(&app, key, "?type=key.").await;
    assert_eq!(types(&family), ["key.created", "key.created", "key.created", "key.revoked"]);
    assert_eq!(family.iter().collect::<Vec<_>>(), of_family);
    let exact = entries(&app, key, "?type=key.created").await;
    assert_eq!(types(&exact), ["key.created"; 3]);
    assert!(entries(&app, key, "?type=key").await.is_empty(), "without the dot, the type is exact");
    assert!(entries(&app, key, "?type=nothing.").await.is_empty());

    let by_admin = entries(&app, key, &format!("?actor={}", tenant.admin.id)).await;
    assert_eq!(types(&by_admin), ["agent.created", "key.created", "key.revoked"]);
    assert!(by_admin.iter().all(|e| e.actor.id == tenant.admin.id));
    let by_auditor = entries(&app, key, &format!("?actor={}", auditor.id)).await;
    assert!(by_auditor.iter().all(|e| e.event_type == "audit.read"), "{:?}", types(&by_auditor));
    assert!(entries(&app, key, "?actor=usr_00000000000000000000000000000000").await.is_empty());

    let limited = entries(&app, key, "?limit=2").await;
    assert_eq!(indices(&limited), [0, 1]);
    let combined = entries(&app, key, &format!("?type=key.&actor={}&limit=1", tenant.admin.id)).await;
    assert_eq!(types(&combined), ["key.created"]);
    assert_eq!(combined[0].actor.id, tenant.admin.id);
    assert!(entries(&app, key, "?limit=0").await.is_empty());
}

#[tokio::test]
async fn entries_filter_by_time_since_inclusive_and_until_exclusive() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;
    let key = &auditor.key.secret;
    // Pauses keep the two agents' entries in milliseconds of their own.
    tokio::time::sleep(Duration::from_millis(30)).await;
    app.post("/v1/agents", admin, &json!({ "name": "first" })).await.expect_status(201);
    tokio::time::sleep(Duration::from_millis(30)).await;
    app.post("/v1/agents", admin, &json!({ "name": "second" })).await.expect_status(201);

    let all = entries(&app, key, "").await;
    let position =
        |name: &str| all.iter().position(|e| e.metadata.get("name") == Some(&json!(name))).unwrap();
    let (first, second) = (&all[position("first")], &all[position("second")]);
    let (from, to) = (&first.time, &second.time);
    assert!(from < to, "{from} < {to}");

    let before = entries(&app, key, &format!("?until={from}")).await;
    assert_eq!(indices(&before), (0..first.index).collect::<Vec<_>>(), "until excludes its instant");
    let after = entries(&app, key, &format!("?since={from}")).await;
    assert_eq!(after[0].index, first.index, "since includes its instant");
    assert!(after.iter().all(|e| &e.time >= from));
    assert_eq!(
        after.len() as u64,
        all.len() as u64 - first.index + 2,
        "and everything after, reads included"
    );
    let between = entries(&app, key, &format!("?since={from}&until={to}")).await;
    assert_eq!(indices(&between), [first.index]);
    assert!(entries(&app, key, "?since=2999-01-01T00:00:00Z").await.is_empty());
    assert!(entries(&app, key, "?until=2000-01-01T00:00:00Z").await.is_empty());
    // Any RFC 3339 offset is understood.
    let offset = entries(&app, key, "?since=2000-01-01T02:00:00%2B02:00&limit=1").await;
    assert_eq!(indices(&offset), [0]);
}

#[tokio::test]
async fn bad_listing_parameters_are_refused_as_invalid() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let key = &tenant.admin.key.secret;

    for query in [
        "?since=yesterday",
        "?until=2026-13-01T00:00:00Z",
        "?since=2026-01-01",
        "?format=xml",
        "?format=CSV",
        "?foo=1",
        "?tenant=other",
        "?limit=-1",
        "?limit=many",
    ] {
        let reply = app.get(&format!("/v1/audit/entries{query}"), key).await;
        reply.expect_problem(400, "invalid-parameter");
    }
    let body =
        app.get("/v1/audit/entries?since=yesterday", key).await.expect_problem(400, "invalid-parameter");
    assert_eq!(body["detail"], "`since` must be an RFC 3339 time such as `2026-11-22T10:00:00Z`");
    let body = app.get("/v1/audit/entries?format=xml", key).await.expect_problem(400, "invalid-parameter");
    assert_eq!(body["detail"], "`format` must be `jsonl` or `csv`, not `xml`");
    let body = app.get("/v1/audit/entries?foo=1", key).await.expect_problem(400, "invalid-parameter");
    assert!(body["detail"].as_str().unwrap().contains("unknown field `foo`"), "{body}");
}

#[tokio::test]
async fn an_export_and_a_listing_longer_than_one_page_are_complete_and_in_order() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    // Well past the server's 1000-entry pages, recorded concurrently as under load.
    const BULK: u64 = 2500;
    let records = (0..BULK).map(|n| {
        let mut metadata = Map::new();
        metadata.insert("n".into(), json!(n));
        app.store.record(&tenant.scope, "test.bulk", &[], metadata)
    });
    for recorded in futures_util::future::join_all(records).await {
        recorded.expect("recorded");
    }

    let export = export(&app, admin).await;
    let summary = verify_export(export.as_bytes(), &verifiers(&app, admin).await, None).expect("verifies");
    let exported = export_entries(&export);
    assert_eq!(summary.entries, exported.len() as u64);
    assert_eq!(summary.entries, 3 + BULK + 1, "the fixtures, the bulk, and the export");
    assert!(summary.checkpoints >= 3, "stored checkpoints are interleaved: {summary}");

    let bulk = entries(&app, admin, "?type=test.").await;
    assert_eq!(bulk.len() as u64, BULK);
    assert!(bulk.windows(2).all(|w| w[0].index < w[1].index), "oldest first");
    let mut numbers: Vec<u64> = bulk.iter().map(|e| e.metadata["n"].as_u64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..BULK).collect::<Vec<_>>(), "each recorded once");

    let limited = entries(&app, admin, "?limit=1500").await;
    assert_eq!(indices(&limited), (0..1500).collect::<Vec<_>>());
    let all = entries(&app, admin, "").await;
    assert_eq!(indices(&all), (0..summary.entries + 3).collect::<Vec<_>>(), "and three reads since");
    let csv = app.get("/v1/audit/entries?format=csv", admin).await;
    assert_eq!(parse_csv(&csv.text).len() as u64, 1 + summary.entries + 4);
}

// ---- tenants ------------------------------------------------------------------------------

#[tokio::test]
async fn a_tenants_audit_log_holds_nothing_of_another_tenant() {
    let app = TestApp::spawn().await;
    let b = app.tenant("tenant-b").await;
    let b_user = app.user(&b.scope, "bea@b.example", &[Role::Viewer]).await;
    let b_agent = app.agent(&b.scope, "b-bot").await;
    let b_api_agent =
        app.post("/v1/agents", &b.admin.key.secret, &json!({ "name": "b-api-bot" })).await.expect_status(201);
    let b_refused = app.get("/v1/audit/export", &b_user.key.secret).await;
    b_refused.expect_problem(403, "forbidden");
    let a = app.tenant("tenant-a").await;
    let a_auditor = app.user(&a.scope, "audrey@a.example", &[Role::Auditor]).await;

    let a_export = export(&app, &a_auditor.key.secret).await;
    let a_keys = verifiers(&app, &a_auditor.key.secret).await;
    let summary =
        verify_export(a_export.as_bytes(), &a_keys, None).expect("A's export verifies with A's keys");
    assert_eq!(summary.origin, format!("airlock/{}", a.id));
    let a_listed = app.get("/v1/audit/entries?format=csv", &a_auditor.key.secret).await.text;
    let b_ids = [
        b.id.as_str(),
        "tenant-b",
        b.admin.id.as_str(),
        b.admin.key.id.as_str(),
        b_user.id.as_str(),
        b_user.key.id.as_str(),
        b_agent.id.as_str(),
        b_agent.key.id.as_str(),
        b_api_agent["id"].as_str().unwrap(),
        "b-api-bot",
    ];
    for id in b_ids {
        assert!(!a_export.contains(id), "A's export names {id}");
        assert!(!a_listed.contains(id), "A's listing names {id}");
    }

    let b_export = export(&app, &b.admin.key.secret).await;
    let b_keys = verifiers(&app, &b.admin.key.secret).await;
    assert_ne!(
        a_keys.iter().map(ToString::to_string).collect::<Vec<_>>(),
        b_keys.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert!(a_keys.iter().all(|k| !b_keys.contains(k)), "no key is shared");
    verify_export(b_export.as_bytes(), &b_keys, None).expect("B's export verifies with B's keys");
    let error = verify_export(b_export.as_bytes(), &a_keys, None).expect_err("B's export is not A's");
    assert_eq!(error.line, 1, "{error}");
    let b_checkpoint = checkpoint_note(&app, &b.admin.key.secret).await;
    assert!(Checkpoint::verify(&b_checkpoint, &a_keys).is_err());
    assert!(b_export.contains("\"type\":\"access.denied\""), "B's refusal is in B's log");
    assert!(!a_export.contains("\"type\":\"access.denied\""), "and not in A's");
}

// ---- checkpoints and proofs ---------------------------------------------------------------

#[tokio::test]
async fn a_checkpoint_and_its_proofs_verify_against_the_published_keys() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;
    let key = &auditor.key.secret;
    app.post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "bot" })).await.expect_status(201);
    let keys = verifiers(&app, key).await;

    let first = Checkpoint::verify(&checkpoint_note(&app, key).await, &keys).expect("a signed checkpoint");
    assert_eq!(first.origin, format!("airlock/{}", tenant.id));
    // Reading the entries records one more: the checkpoint covered every entry before it.
    let listed = entries(&app, key, "").await;
    assert_eq!(listed.len() as u64, first.size + 1);
    assert_eq!(listed.last().unwrap().index, first.size);
    let leaves: Vec<Hash> =
        listed.iter().map(|e| merkle::leaf_hash(e.canonical(true).unwrap().as_bytes())).collect();
    assert_eq!(merkle::root(&leaves[..usize::try_from(first.size).unwrap()]), first.root);

    for index in [0, first.size / 2, first.size - 1] {
        let proof =
            app.get_ok(&format!("/v1/audit/proofs/inclusion?index={index}&size={}", first.size), key).await;
        assert_eq!((proof["index"].as_u64(), proof["size"].as_u64()), (Some(index), Some(first.size)));
        let entry = proof["entry"].as_str().unwrap();
        assert_eq!(entry, listed[usize::try_from(index).unwrap()].canonical(true).unwrap());
        let leaf = merkle::leaf_hash(entry.as_bytes());
        assert_eq!(proof["leaf_hash"], leaf.to_base64());
        merkle::verify_inclusion(&leaf, index, first.size, &hashes(&proof["proof"]), &first.root)
            .expect("the inclusion proof verifies against the signed root");
        let other = merkle::leaf_hash(b"{}");
        assert!(
            merkle::verify_inclusion(&other, index, first.size, &hashes(&proof["proof"]), &first.root)
                .is_err()
        );
    }

    app.post("/v1/agents", &tenant.admin.key.secret, &json!({ "name": "another" })).await.expect_status(201);
    let second = Checkpoint::verify(&checkpoint_note(&app, key).await, &keys).expect("a signed checkpoint");
    assert!(second.size > first.size, "{} > {}", second.size, first.size);
    let path = format!("/v1/audit/proofs/consistency?from={}&to={}", first.size, second.size);
    let consistency = app.get_ok(&path, key).await;
    assert_eq!(
        (consistency["from"].as_u64(), consistency["to"].as_u64()),
        (Some(first.size), Some(second.size))
    );
    let proof = hashes(&consistency["proof"]);
    merkle::verify_consistency(first.size, second.size, &first.root, &second.root, &proof)
        .expect("the log only grew between the two signed roots");
    assert!(merkle::verify_consistency(first.size, second.size, &second.root, &first.root, &proof).is_err());

    // An export pinned to the earlier checkpoint verifies: it extends what was signed then.
    let export = export(&app, key).await;
    verify_export(export.as_bytes(), &keys, Some(&first)).expect("consistent with the earlier checkpoint");
}

#[tokio::test]
async fn proofs_outside_the_log_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let key = &tenant.admin.key.secret;
    let size =
        Checkpoint::verify(&checkpoint_note(&app, key).await, &verifiers(&app, key).await).unwrap().size;
    let beyond = size + 100;

    // An index outside the named tree, or sizes out of order, cannot be proved: 422.
    for path in [
        format!("/v1/audit/proofs/inclusion?index={size}&size={size}"),
        format!("/v1/audit/proofs/inclusion?index={beyond}&size=1"),
        "/v1/audit/proofs/inclusion?index=0&size=0".to_owned(),
        format!("/v1/audit/proofs/consistency?from=0&to={size}"),
        format!("/v1/audit/proofs/consistency?from={size}&to=1"),
    ] {
        app.get(&path, key).await.expect_problem(422, "unprocessable");
    }
    let body = app
        .get(&format!("/v1/audit/proofs/consistency?from=0&to={size}"), key)
        .await
        .expect_problem(422, "unprocessable");
    assert!(body["detail"].as_str().unwrap().contains("0 < from <= to"), "{body}");
    // A tree larger than the log does not exist (yet): 404.
    for path in [
        format!("/v1/audit/proofs/inclusion?index=0&size={beyond}"),
        format!("/v1/audit/proofs/consistency?from=1&to={beyond}"),
    ] {
        app.get(&path, key).await.expect_problem(404, "not-found");
    }
    // Missing, unknown or malformed parameters: 400.
    for path in [
        "/v1/audit/proofs/inclusion?index=0",
        "/v1/audit/proofs/inclusion?index=0&size=1&extra=1",
        "/v1/audit/proofs/inclusion?index=-1&size=1",
        "/v1/audit/proofs/consistency?from=1",
        "/v1/audit/proofs/consistency?from=one&to=2",
    ] {
        app.get(path, key).await.expect_problem(400, "invalid-parameter");
    }
}

// ---- signing keys -------------------------------------------------------------------------

#[tokio::test]
async fn after_a_key_rotation_old_checkpoints_verify_with_the_retired_key_and_the_export_needs_both() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let auditor = app.user(&tenant.scope, "audrey@acme.example", &[Role::Auditor]).await;
    let before = app.get_ok("/v1/audit/keys", &auditor.key.secret).await;
    assert_eq!(before.as_array().unwrap().len(), 1);
    assert_eq!(before[0]["version"], 1);
    assert_eq!(before[0]["retired_at"], Value::Null);
    let old_key = NoteVerifier::parse(before[0]["verifier"].as_str().unwrap()).unwrap();
    let old_note = checkpoint_note(&app, &auditor.key.secret).await;
    let old_checkpoint = Checkpoint::verify(&old_note, std::slice::from_ref(&old_key)).unwrap();

    app.post(ROTATE, &auditor.key.secret, &json!({})).await.expect_problem(403, "forbidden");
    let rotated = app.post(ROTATE, admin, &json!({})).await.expect_status(200);
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["retired_at"], Value::Null);
    let new_key = NoteVerifier::parse(rotated["verifier"].as_str().unwrap()).unwrap();
    assert_ne!(new_key, old_key);

    let after = app.get_ok("/v1/audit/keys", &auditor.key.secret).await;
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!((&after[0]["version"], &after[0]["verifier"]), (&json!(2), &rotated["verifier"]));
    assert_eq!(after[0]["retired_at"], Value::Null);
    assert_eq!((&after[1]["version"], &after[1]["verifier"]), (&json!(1), &before[0]["verifier"]));
    assert_eq!(after[1]["created_at"], before[0]["created_at"]);
    assert!(after[1]["retired_at"].is_string(), "the old key is retired: {after:?}");

    // What the old key signed still verifies with it, and only with it.
    assert_eq!(Checkpoint::verify(&old_note, std::slice::from_ref(&old_key)).unwrap(), old_checkpoint);
    assert!(Checkpoint::verify(&old_note, std::slice::from_ref(&new_key)).is_err());
    let new_note = checkpoint_note(&app, &auditor.key.secret).await;
    let new_checkpoint = Checkpoint::verify(&new_note, std::slice::from_ref(&new_key)).unwrap();
    assert!(Checkpoint::verify(&new_note, std::slice::from_ref(&old_key)).is_err());
    assert!(new_checkpoint.size > old_checkpoint.size);

    let export = export(&app, &auditor.key.secret).await;
    let both = [old_key.clone(), new_key.clone()];
    let summary =
        verify_export(export.as_bytes(), &both, Some(&old_checkpoint)).expect("verifies with both keys");
    assert!(summary.checkpoints >= 3, "the old checkpoint, the rotation's, the header's: {summary}");
    assert!(
        verify_export(export.as_bytes(), &[old_key], None).is_err(),
        "the old key alone does not suffice"
    );
    assert!(verify_export(export.as_bytes(), &[new_key], None).is_err(), "nor the new key alone");
    assert_eq!(verify_export(export.as_bytes(), &verifiers(&app, admin).await, None), Ok(summary));

    let rotations = entries(&app, &auditor.key.secret, "?type=audit.key_rotated").await;
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0].actor.id, tenant.admin.id);
    assert_eq!(rotations[0].metadata["version"], 2);
}

// ---- refused credentials ------------------------------------------------------------------

#[tokio::test]
async fn a_failed_login_is_recorded_with_an_anonymous_actor() {
    let app = TestApp::spawn().await;
    let tenant = app.default_tenant().await;
    let admin = &tenant.admin.key.secret;

    app.login(DEFAULT_TENANT, DEFAULT_ADMIN, "not the right password")
        .await
        .expect_problem(401, "unauthenticated");
    app.login(DEFAULT_TENANT, "nobody@localhost", "not the right password")
        .await
        .expect_problem(401, "unauthenticated");

    let failed = entries(&app, admin, "?type=auth.login_failed").await;
    assert_eq!(failed.len(), 1, "an unknown account names nobody to record: {failed:?}");
    assert_eq!(
        (failed[0].actor.kind.as_str(), failed[0].actor.id.as_str()),
        ("anonymous", "unauthenticated")
    );
    assert_eq!(failed[0].subject["user"], tenant.admin.id);
    assert_eq!(failed[0].metadata["reason"], "wrong_password");
    assert!(entries(&app, admin, "?type=auth.login").await.is_empty(), "no login happened");
}

#[tokio::test]
async fn a_revoked_or_wrong_key_is_recorded_as_rejected() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("acme").await;
    let admin = &tenant.admin.key.secret;
    let created = app.post("/v1/keys", admin, &json!({ "name": "laptop" })).await.expect_status(201);
    let (id, secret) = (created["key"]["id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    app.get_ok("/v1/whoami", secret).await;
    app.delete(&format!("/v1/keys/{id}"), admin).await.expect_status(200);

    app.get("/v1/whoami", secret).await.expect_problem(401, "unauthenticated");
    let mut wrong = tenant.admin.key.secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    app.get("/v1/whoami", &wrong).await.expect_problem(401, "unauthenticated");
    let unknown = format!("alk_{UNKNOWN_KEY_ID}_{}", &secret[secret.len() - 43..]);
    app.get("/v1/whoami", &unknown).await.expect_problem(401, "unauthenticated");

    let rejected = entries(&app, admin, "?type=auth.key_rejected").await;
    assert_eq!(rejected.len(), 2, "a key id that names no key has no tenant to tell: {rejected:?}");
    for entry in &rejected {
        assert_eq!((entry.actor.kind.as_str(), entry.actor.id.as_str()), ("anonymous", "unauthenticated"));
    }
    assert_eq!(rejected[0].subject["key"], id);
    assert_eq!(rejected[0].metadata["reason"], "revoked credential");
    assert_eq!(rejected[1].subject["key"], tenant.admin.key.id);
    assert_eq!(rejected[1].metadata["reason"], "unknown credential");
    assert!(!rejected.iter().any(|e| e.metadata.values().any(|v| v.as_str() == Some(secret))));
}
