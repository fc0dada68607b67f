#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn all() -> &'static Detector {
    static ALL: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(|| {
        let kinds: HashSet<Builtin> = Builtin::ALL.iter().copied().collect();
        Detector::new(&kinds, &[], &[], &[]).unwrap()
    });
    &ALL
}

fn found(detector: &Detector, text: &str) -> Vec<(String, String)> {
    detector.detect(text).iter().map(|f| (f.kind.name().to_owned(), f.value(text).to_owned())).collect()
}

fn one(text: &str) -> Vec<(String, String)> {
    found(all(), text)
}

fn pair(kind: &str, value: &str) -> (String, String) {
    (kind.to_owned(), value.to_owned())
}

#[test]
fn finds_each_structured_identifier_in_a_sentence() {
    let cases = [
        ("Write to ana.lopez+x@example.co.uk today.", "email", "ana.lopez+x@example.co.uk"),
        ("Call (415) 555-0132 now", "phone", "(415) 555-0132"),
        ("Call +44 20 7123 4567 now", "phone", "+44 20 7123 4567"),
        ("Card 4111 1111 1111 1111 exp 12/29", "payment_card", "4111 1111 1111 1111"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("SSN 536-90-4399 on file", "us_ssn", "536-90-4399"),
        ("ITIN 912-70-1234 on file", "us_itin", "912-70-1234"),
        ("Our EIN is 12-3456789.", "us_ein", "12-3456789"),
        ("NINO AB 12 34 56 C here", "uk_nino", "AB 12 34 56 C"),
        ("NHS number 943 476 5919", "uk_nhs", "943 476 5919"),
        ("PAN ABCPD1234Z filed", "in_pan", "ABCPD1234Z"),
        ("passport no. 912803456 issued", "passport", "912803456"),
        ("born on 14 March 1987 in Leeds", "date_of_birth", "14 March 1987"),
        ("host 192.168.10.4 is down", "ip_address", "192.168.10.4"),
        ("host fe80::1ff:fe23:4567:890a is up", "ip_address", "fe80::1ff:fe23:4567:890a"),
        ("MAC 00:1A:2B:3C:4D:5E seen", "mac_address", "00:1A:2B:3C:4D:5E"),
        (
            "send to 3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy now",
            "crypto_wallet",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        ),
        ("see https://example.com/a?b=c).", "url", "https://example.com/a?b=c"),
        ("Dr. Jane Smith called", "person_name", "Dr. Jane Smith"),
        ("Meet Priya Raman tomorrow", "person_name", "Priya Raman"),
        ("lives at 221 Baker Street, London", "postal_address", "221 Baker Street, London"),
        ("the routing number is 121000358", "aba_routing", "121000358"),
        ("bank account 000123456789", "bank_account", "000123456789"),
    ];
    let detector = all();
    for (text, kind, value) in cases {
        assert_eq!(found(detector, text), vec![pair(kind, value)], "{text}");
    }
}

#[test]
fn lookalikes_with_bad_checksums_or_no_context_are_not_found() {
    let detector = all();
    for text in [
        "Card 4111 1111 1111 1112 declined",
        "IBAN GB82 WEST 1234 5698 7654 33 please",
        "SSN 666-12-3456 invalid",
        "order 123456789 shipped",
        "version 1.2.3 released",
        "at 12:30:45 today",
        "see main.rs and README.md",
        "PAN ABCDE1234Z filed",
        "the year 1987 was fine",
        "NHS number 9434765918",
        "send to 3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz now",
    ] {
        assert_eq!(found(detector, text), vec![], "{text}");
    }
}

#[test]
fn finds_secrets_by_format_and_context() {
    let detector = all();
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let github = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let anthropic = format!("sk-ant-api03-{}", "x".repeat(90));
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let cases = [
        (format!("key {aws} leaked"), "api_key", aws.to_owned()),
        (format!("token {github}"), "api_key", github.clone()),
        (format!("use {anthropic} here"), "api_key", anthropic.clone()),
        (format!("Authorization: Bearer {jwt}"), "jwt", jwt.to_owned()),
        (
            "DATABASE_URL=postgres://app:s3cr3t-pw@db:5432/app".to_owned(),
            "connection_password",
            "s3cr3t-pw".to_owned(),
        ),
        ("db_password = \"hunter2hunter\"".to_owned(), "credential", "hunter2hunter".to_owned()),
        (
            "\"api_key\": \"9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c\"".to_owned(),
            "credential",
            "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c".to_owned(),
        ),
        (
            "Authorization: Bearer 4f9Qk2LmZ8xR7vT1nB6y".to_owned(),
            "credential",
            "4f9Qk2LmZ8xR7vT1nB6y".to_owned(),
        ),
    ];
    for (text, kind, value) in cases {
        assert_eq!(found(detector, &text), vec![pair(kind, &value)], "{text}");
    }
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
    let text = format!("here:\n{pem}\nthanks");
    assert_eq!(found(detector, &text), vec![pair("private_key", pem)]);
}

#[test]
fn credentials_need_a_real_value() {
    let detector = all();
    for text in [
        "password: ********",
        "password=${DB_PASSWORD}",
        "token: abc",
        "api_key = <your key here>",
        "the password field is required",
        "postgres://app:@db/app",
        "secret: aaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        assert_eq!(found(detector, text), vec![], "{text}");
    }
}

#[test]
fn custom_patterns_dictionaries_and_allowlist() {
    let matter = CustomName::parse("matter_id").unwrap();
    let codename = CustomName::parse("codename").unwrap();
    let detector = Detector::new(
        &[Builtin::Email].into_iter().collect(),
        &[CustomPattern { name: matter, pattern: r"\bMAT-[0-9]{6}\b".to_owned(), context: vec![] }],
        &[CustomDictionary {
            name: codename,
            terms: vec!["Bluebird".to_owned(), "Project Nightjar".to_owned()],
        }],
        &["press@example.com".to_owned()],
    )
    .unwrap();
    assert_eq!(
        found(
            &detector,
            "MAT-004211 for project nightjar (not Bluebirds); mail press@example.com or ana@example.com"
        ),
        vec![
            pair("matter_id", "MAT-004211"),
            pair("codename", "project nightjar"),
            pair("email", "ana@example.com")
        ]
    );
}

#[test]
fn tenant_patterns_are_checked() {
    let name = CustomName::parse("x").unwrap();
    for bad in [r"(a)\1", r"(?=a)b", "", "a*", r"\w{1000}{1000}"] {
        let p = CustomPattern { name: name.clone(), pattern: bad.to_owned(), context: vec![] };
        assert!(Detector::new(&HashSet::new(), &[p], &[], &[]).is_err(), "{bad}");
    }
}

#[test]
fn spans_fall_on_character_boundaries_in_any_script() {
    let text = "Ünïcødé — ana@example.com — 电话 +86 138 1234 5678 — été 4111111111111111 ✓";
    let got = one(text);
    assert_eq!(
        got,
        vec![
            pair("email", "ana@example.com"),
            pair("phone", "+86 138 1234 5678"),
            pair("payment_card", "4111111111111111")
        ]
    );
}

#[test]
fn given_names_file_is_one_alternation() {
    let names = include_str!("given_names.txt");
    assert!(!names.contains(char::is_whitespace) && !names.contains("||"));
    assert!(names.split('|').all(|n| n.chars().next().is_some_and(|c| c.is_ascii_uppercase())));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn findings_are_ordered_disjoint_and_on_boundaries(text in "[ -~\u{e9}\u{4e2d}\n]{0,300}") {
            let detector = all();
            let mut last = 0;
            for f in detector.detect(&text) {
                prop_assert!(f.start >= last && f.start < f.end && f.end <= text.len());
                prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
                last = f.end;
            }
        }
    }
}
