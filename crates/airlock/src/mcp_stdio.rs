//! `airlock mcp-stdio`: bridges a local agent that speaks MCP over stdio (Claude Desktop,
//! an IDE, an agent framework) to a remote Airlock's governed `/mcp` endpoint.
//!
//! Each JSON-RPC message read from standard input (one per line, as MCP's stdio transport
//! frames them) is POSTed to the endpoint with the agent's key; what comes back (a JSON
//! response, or a stream of server-sent events carrying progress notifications and then the
//! response) is written to standard output, one message per line. The session id Airlock
//! assigns at `initialize` is sent with every later message, and the session is closed when
//! standard input ends. Messages are forwarded concurrently, so a notification (a
//! cancellation, say) is not stuck behind a call that waits for an approval.
//!
//! The bridge is written against the wire rather than through the MCP SDK: it forwards bytes
//! and never needs to understand a message beyond finding the session header.

use std::sync::Arc;

use airlock_llm::sse::SseParser;
use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{Mutex, mpsc};

/// How to reach Airlock.
#[derive(Debug, clap::Args)]
pub struct McpStdioArgs {
    /// The endpoint, for example `https://airlock.example.com/mcp`.
    #[arg(long, env = "AIRLOCK_MCP_URL")]
    url: String,
    /// The agent's API key (`alk_…`); better given in `AIRLOCK_API_KEY`.
    #[arg(long, env = "AIRLOCK_API_KEY", hide_env_values = true)]
    key: String,
    /// The run's intent, sent at initialization (the session is the run).
    #[arg(long)]
    intent: Option<String>,
    /// The tools the run may use, comma-separated (default: every tool the agent may use).
    #[arg(long)]
    tools: Option<String>,
}

/// Largest message accepted from standard input.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// Runs the bridge until standard input ends.
pub async fn run(args: &McpStdioArgs) -> anyhow::Result<()> {
    if !(args.url.starts_with("https://") || args.url.starts_with("http://")) {
        bail!("`--url` must be an http(s) URL of Airlock's `/mcp` endpoint");
    }
    let client = reqwest::Client::builder().build().context("cannot build an HTTP client")?;
    let session: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (out, mut lines) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.write_all(b"\n").await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = Vec::new();
    while let Some(line) = stdin.next_line().await.context("cannot read standard input")? {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            eprintln!("airlock mcp-stdio: a message over {MAX_LINE} bytes was dropped");
            continue;
        }
        let initialize = line.contains("\"initialize\"");
        let forward = Forward { client: client.clone(), session: session.clone(), out: out.clone() };
        let args = (args.url.clone(), args.key.clone(), args.intent.clone(), args.tools.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = forward.send(&args, line, initialize).await {
                eprintln!("airlock mcp-stdio: {error:#}");
            }
        });
        // The session id comes with the answer to `initialize`: wait for it before sending
        // anything else.
        if initialize {
            let _ = task.await;
        } else {
            tasks.push(task);
        }
        tasks.retain(|t| !t.is_finished());
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(id) = session.lock().await.clone() {
        let _ = client.delete(&args.url).bearer_auth(&args.key).header("mcp-session-id", id).send().await;
    }
    drop(out);
    let _ = writer.await;
    Ok(())
}

struct Forward {
    client: reqwest::Client,
    session: Arc<Mutex<Option<String>>>,
    out: mpsc::Sender<String>,
}

impl Forward {
    async fn send(
        &self,
        (url, key, intent, tools): &(String, String, Option<String>, Option<String>),
        message: String,
        initialize: bool,
    ) -> anyhow::Result<()> {
        let mut request = self
            .client
            .post(url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(message);
        if let Some(id) = self.session.lock().await.as_deref() {
            request = request.header("mcp-session-id", id);
        }
        if initialize {
            if let Some(intent) = intent {
                request = request.header("x-airlock-intent", intent);
            }
            if let Some(tools) = tools {
                request = request.header("x-airlock-tools", tools);
            }
        }
        let mut response = request.send().await.context("cannot reach Airlock")?;
        if let Some(id) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            *self.session.lock().await = Some(id.to_owned());
        }
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(());
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("Airlock answered {status}: {}", body.chars().take(500).collect::<String>());
        }
        let streamed = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !streamed {
            let body = response.text().await.context("cannot read Airlock's answer")?;
            if !body.trim().is_empty() {
                let _ = self.out.send(body.trim().to_owned()).await;
            }
            return Ok(());
        }
        let mut parser = SseParser::new();
        while let Some(chunk) = response.chunk().await.context("the stream from Airlock broke")? {
            for event in parser.push(&chunk).map_err(|e| anyhow::anyhow!("{e}"))? {
                if !event.data.trim().is_empty() {
                    let _ = self.out.send(event.data.replace('\n', "")).await;
                }
            }
        }
        Ok(())
    }
}
