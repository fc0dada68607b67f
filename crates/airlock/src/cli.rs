//! Command-line parsing and the commands themselves.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use airlock_audit::{Checkpoint, NoteVerifier};
use airlock_server::config::{self, RawConfig, RawServer};
use airlock_server::{Application, Config, Mode};
use airlock_store::{KeyOwner, NewUser, Principal, Store, TenantScope};
use airlock_types::{AgentName, ApiKeyId, Email, Role, TenantSlug, Timestamp};
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "The control plane that lets AI agents do real work without real power"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "AIRLOCK_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create and list tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Create and list users of a tenant.
    #[command(subcommand)]
    User(UserCommand),
    /// Create and list agent identities of a tenant.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Export, verify and inspect tenants' tamper-evident audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The key hierarchy: rotate keys, make a key file, a tenant's own key.
    #[command(subcommand)]
    Keys(crate::keys::KeysCommand),
    /// Print the OpenAPI 3.1 document.
    Openapi,
    /// Measure Airlock end to end.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Bridge a local agent that speaks MCP over stdio to a remote Airlock's `/mcp` endpoint.
    McpStdio(crate::mcp_stdio::McpStdioArgs),
    /// Redact, restore and scan text on standard input, as the gateway would: no server,
    /// configuration or data directory.
    #[command(subcommand)]
    Inspect(crate::inspect::InspectCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Decision-path latency for a permitted read action against a loopback upstream, next to
    /// the upstream called directly, at a fixed request rate.
    Actions(crate::bench::ActionsBench),
    /// Latency the model gateway adds over calling the provider directly (redaction on, JSON
    /// and streamed), throughput at saturation and memory; optionally next to another gateway.
    Gateway(crate::bench_gateway::GatewayBench),
    /// Serve only the fake OpenAI-compatible provider, for another gateway to call.
    Upstream(crate::bench_gateway::UpstreamBench),
    /// Data-key rotation speed (rows/s) and tenant export speed (MB/s) on a scratch tenant.
    Keys(crate::bench_keys::KeysBench),
    /// The flow guard's scenario suite: legitimate tasks and hijacked variants, through the
    /// REST API; reports tasks done with no human and injected calls stopped.
    Scenarios(crate::scenarios::ScenariosBench),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Write a tenant's verifiable export (JSON Lines): a signed header, every entry and
    /// every checkpoint.
    Export {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Verify an export offline, with the tenant's public key(s) alone: no server, no
    /// database. Exits 0 with a one-line summary when the log holds; otherwise names the
    /// first broken entry and exits 1.
    Verify {
        /// The export file.
        file: PathBuf,
        /// A verifier key (`name+keyid+base64`), or `@FILE` holding one per line. Repeat for
        /// rotated keys.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// A signed checkpoint obtained separately (from `GET /v1/audit/checkpoint`): the
        /// export must contain and extend it, which detects a rolled-back export.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Print a tenant's verifier keys, current first.
    Keys {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
    /// Print a signed checkpoint covering every entry of a tenant's log.
    Checkpoint {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
    /// Retire a tenant's signing key and start signing with a new one.
    RotateKey {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Port to listen on, keeping the configured address.
    #[arg(long, conflicts_with = "listen")]
    port: Option<u16>,
    /// `dev` or `production`.
    #[arg(long)]
    mode: Option<String>,
    /// The URL clients reach Airlock at.
    #[arg(long)]
    public_url: Option<String>,
}

#[derive(Debug, Args)]
struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and its database.
    Create {
        /// Unique short name: lowercase letters, digits and hyphens.
        slug: String,
        /// Display name (defaults to the slug).
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Write a tenant's signed export archive: every table as JSON Lines, the audit log in
    /// verifiable form, and a manifest signed with the tenant's audit key. Credentials and
    /// keys are redacted.
    Export {
        /// The tenant's slug.
        slug: String,
        /// The archive to create (`-` for standard output).
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Verify an export archive offline: its signature, every entry's count and digest, and
    /// its audit log.
    VerifyExport {
        /// The archive.
        file: PathBuf,
        /// A verifier key (`name+id+key`), or `@file` with one per line. Without one, the
        /// keys the archive carries are used, which proves integrity but not origin.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// Delete a tenant: destroy its data keys (crypto-shred), remove its database, revoke
    /// its API keys and sessions, and record the deletion in the platform log. Irreversible.
    Delete {
        /// The tenant's slug.
        slug: String,
        /// The slug again, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. A password is generated and printed unless given on stdin.
    Create {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The user's e-mail address (their login name).
        #[arg(long)]
        email: String,
        /// A role (repeat for several): admin, builder, approver, member, viewer, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input instead of generating one.
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// Create the user without a password (API keys only, no console login).
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        output: Output,
    },
    /// List the users of a tenant.
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Create an agent identity.
    Create {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The agent's name, unique in the tenant.
        name: String,
        /// What the agent is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        output: Output,
    },
    /// List the agents of a tenant.
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key for an agent, a user, or a platform operator. The key is printed
    /// once and cannot be shown again.
    Create {
        /// The tenant's slug (not with --operator).
        #[arg(long, required_unless_present = "operator", conflicts_with = "operator")]
        tenant: Option<String>,
        /// Issue the key to this agent (by name).
        #[arg(long, group = "owner")]
        agent: Option<String>,
        /// With --agent: create the agent if it does not exist.
        #[arg(long, requires = "agent")]
        create_agent: bool,
        /// Issue the key to this user (by e-mail).
        #[arg(long, group = "owner")]
        user: Option<String>,
        /// Issue the key to this platform operator (created if new), for `/admin/v1`.
        #[arg(long, group = "owner")]
        operator: Option<String>,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime such as `90d` or `12h`; without it the key lives until revoked.
        #[arg(long, value_parser = crate::duration::parse)]
        expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        output: Output,
    },
    /// List the API keys of a tenant.
    List {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        output: Output,
    },
    /// Revoke an API key. It stops working on the next request.
    Revoke {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The key's id (`key_…`).
        id: String,
        #[command(flatten)]
        output: Output,
    },
}

pub(crate) fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cli))
}

fn load_config(cli: &Cli, serve: Option<&ServeArgs>) -> anyhow::Result<Config> {
    let mut overrides = RawConfig { data_dir: cli.data_dir.clone(), ..RawConfig::default() };
    if let Some(args) = serve {
        overrides.public_url.clone_from(&args.public_url);
        overrides.mode = match args.mode.as_deref() {
            None => None,
            Some("dev") => Some(Mode::Dev),
            Some("production") => Some(Mode::Production),
            Some(other) => bail!("`--mode {other}`: expected `dev` or `production`"),
        };
        overrides.server = RawServer { listen: args.listen.clone(), ..RawServer::default() };
    }
    let mut raw = config::load(cli.config.as_deref(), &overrides)?;
    if let Some(port) = serve.and_then(|a| a.port) {
        let listen = raw.server.listen.clone().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let host = listen.rsplit_once(':').map_or(listen.as_str(), |(host, _)| host);
        raw.server.listen = Some(format!("{host}:{port}"));
    }
    Ok(raw.validate()?)
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    airlock_server::secrets::open_store(config).await
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => serve(load_config(&cli, Some(args))?).await,
        Command::Openapi => {
            println!("{}", airlock_server::openapi_document());
            Ok(())
        }
        Command::Bench(BenchCommand::Actions(args)) => crate::bench::run(args).await,
        Command::Bench(BenchCommand::Gateway(args)) => crate::bench_gateway::run(args).await,
        Command::Bench(BenchCommand::Upstream(args)) => crate::bench_gateway::run_upstream(args).await,
        Command::Bench(BenchCommand::Keys(args)) => crate::bench_keys::run(args).await,
        Command::Bench(BenchCommand::Scenarios(args)) => crate::scenarios::run(args).await,
        // Offline: no configuration, no data directory.
        Command::Audit(AuditCommand::Verify { file, keys, checkpoint }) => {
            verify(file, keys, checkpoint.as_deref())
        }
        Command::Inspect(command) => crate::inspect::run(command),
        Command::McpStdio(args) => crate::mcp_stdio::run(args).await,
        Command::Tenant(TenantCommand::VerifyExport { file, keys }) => {
            crate::export::verify(file, &read_keys(keys)?)
        }
        Command::Keys(command) => match crate::keys::run_offline(command) {
            Some(result) => result,
            None => with_store(&cli, async |store| crate::keys::run(store, command).await).await,
        },
        Command::Audit(command) => with_store(&cli, async |store| audit(store, command).await).await,
        Command::Tenant(command) => {
            let config = load_config(&cli, None)?;
            let second_operator = config.deletion_requires_second_operator;
            let store = open_store(&config).await?;
            let result = tenant(&store, command, second_operator).await;
            store.close().await;
            result
        }
        Command::User(command) => with_store(&cli, async |store| user(store, command).await).await,
        Command::Agent(command) => with_store(&cli, async |store| agent(store, command).await).await,
        Command::Key(command) => with_store(&cli, async |store| key(store, command).await).await,
    }
}

/// Opens the data directory, runs `command` on it, and closes it cleanly whatever happened.
async fn with_store(
    cli: &Cli,
    command: impl AsyncFnOnce(&Store) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let store = open_store(&load_config(cli, None)?).await?;
    let result = command(&store).await;
    store.close().await;
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    airlock_server::telemetry::init(&config);
    let public_url = config.public_url.clone();
    let mode = config.mode;
    let data_dir = config.data_dir.clone();
    let app = Application::build(config).await?;
    let first = airlock_server::bootstrap::ensure_first_tenant(app.store())
        .await
        .context("cannot create the first tenant")?;
    let addr = app.local_addr()?;
    let mode = match mode {
        Mode::Dev => "dev",
        Mode::Production => "production",
    };
    println!(
        "Airlock {} listening on http://{addr} ({mode} mode, data in {})",
        env!("CARGO_PKG_VERSION"),
        data_dir.display()
    );
    if let Some(first) = &first {
        println!();
        println!("First start: created tenant `{}` and its administrator.", first.tenant);
        println!("  e-mail:   {}", first.admin_email);
        println!("  password: {}   (shown only now)", first.password());
        println!();
        println!("Log in (console session):");
        println!(
            "  curl -i {public_url}/v1/sessions -H 'content-type: application/json' \\\n    -d '{{\"tenant\":\"{}\",\"email\":\"{}\",\"password\":\"{}\"}}'",
            first.tenant,
            first.admin_email,
            first.password()
        );
    }
    println!();
    println!("Create an agent key (the key is shown once):");
    println!("  airlock key create --tenant default --agent my-agent --create-agent");
    println!("Then call the API with it:");
    println!("  curl -H 'authorization: Bearer alk_…' {public_url}/v1/whoami");
    println!("API description: {public_url}/openapi.json");
    app.run(airlock_server::shutdown_signal()).await
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn scope(store: &Store, tenant: &str) -> anyhow::Result<TenantScope> {
    let slug = TenantSlug::parse(tenant)?;
    Ok(store.operator_scope(&Principal::local_operator(), &slug).await?)
}

async fn tenant(store: &Store, command: &TenantCommand, second_operator: bool) -> anyhow::Result<()> {
    let operator = Principal::local_operator();
    match command {
        TenantCommand::Create { slug, name, output } => {
            let tenant = store.create_tenant(&operator, &TenantSlug::parse(slug)?, name).await?;
            if output.json {
                return print_json(&tenant);
            }
            println!("created tenant `{}` ({})", tenant.slug, tenant.id);
        }
        TenantCommand::List { output } => {
            let tenants = store.list_tenants(&operator).await?;
            if output.json {
                return print_json(&tenants);
            }
            println!("{:<24} {:<38} {:<24} NAME", "SLUG", "ID", "CREATED");
            for t in tenants {
                println!("{:<24} {:<38} {:<24} {}", t.slug, t.id, t.created_at, t.name);
            }
        }
        TenantCommand::Export { slug, output } => {
            crate::export::export(store, &scope(store, slug).await?, output).await?;
        }
        TenantCommand::VerifyExport { file, keys } => crate::export::verify(file, &read_keys(keys)?)?,
        TenantCommand::Delete { slug, confirm } => {
            let scope = scope(store, slug).await?;
            match store.delete_tenant(&operator, &scope, confirm, second_operator).await? {
                airlock_store::Deletion::Deleted { keys_destroyed, database_removed } => {
                    let file = if database_removed { "removed" } else { "was already gone" };
                    println!(
                        "deleted tenant `{slug}` ({}): {keys_destroyed} data key(s) destroyed, database {file}",
                        scope.tenant_id()
                    );
                }
                airlock_store::Deletion::AwaitingApproval { requested_by, expires_at } => {
                    println!(
                        "deletion of `{slug}` requested by {requested_by}; another operator must confirm before {expires_at}"
                    );
                }
            }
        }
    }
    Ok(())
}

async fn user(store: &Store, command: &UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { tenant, email, roles, name, password_stdin, no_password, output } => {
            let scope = scope(store, tenant).await?;
            let email = Email::parse(email)?;
            let roles = roles.iter().map(|r| Role::parse(r)).collect::<Result<_, _>>()?;
            let (password, generated) = if *no_password {
                (None, false)
            } else if *password_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("cannot read the password from stdin")?;
                (Some(text.trim_end_matches(['\r', '\n']).to_owned()), false)
            } else {
                (Some(airlock_crypto::random_base64url(18)), true)
            };
            let user = store
                .create_user(
                    &scope,
                    NewUser {
                        name: name.clone().unwrap_or_else(|| email.to_string()),
                        email,
                        roles,
                        password: password.clone().map(SecretString::from),
                    },
                )
                .await?;
            let shown = if generated { password } else { None };
            if output.json {
                #[derive(Serialize)]
                struct Created<'a> {
                    user: &'a airlock_store::User,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    password: Option<String>,
                }
                return print_json(&Created { user: &user, password: shown });
            }
            let roles: Vec<&str> = user.roles.iter().map(Role::as_str).collect();
            println!("created user {} ({}) with roles {}", user.email, user.id, roles.join(", "));
            if let Some(password) = shown {
                println!("password: {password}   (shown only now)");
            }
        }
        UserCommand::List { tenant, output } => {
            let users = store.list_users(&scope(store, tenant).await?).await?;
            if output.json {
                return print_json(&users);
            }
            println!("{:<32} {:<38} ROLES", "E-MAIL", "ID");
            for u in users {
                let roles: Vec<&str> = u.roles.iter().map(Role::as_str).collect();
                println!("{:<32} {:<38} {}", u.email, u.id, roles.join(","));
            }
        }
    }
    Ok(())
}

async fn agent(store: &Store, command: &AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Create { tenant, name, description, output } => {
            let agent = store
                .create_agent(&scope(store, tenant).await?, &AgentName::parse(name)?, description)
                .await?;
            if output.json {
                return print_json(&agent);
            }
            println!("created agent `{}` ({})", agent.name, agent.id);
        }
        AgentCommand::List { tenant, output } => {
            let agents = store.list_agents(&scope(store, tenant).await?).await?;
            if output.json {
                return print_json(&agents);
            }
            println!("{:<32} {:<38} DESCRIPTION", "NAME", "ID");
            for a in agents {
                println!("{:<32} {:<38} {}", a.name, a.id, a.description);
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct CreatedKeyOutput<'a> {
    key: &'a airlock_store::ApiKey,
    secret: &'a str,
}

async fn key(store: &Store, command: &KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { tenant, agent, create_agent, user, operator, name, expires_in, output } => {
            let expires_at = expires_in.map(|d| Timestamp::now().plus(d));
            let created = match (tenant, agent, user, operator) {
                (None, None, None, Some(operator)) => {
                    store.create_operator_key(&Principal::local_operator(), operator, expires_at).await?
                }
                (Some(tenant), Some(agent), None, None) => {
                    let scope = scope(store, tenant).await?;
                    let agent_name = AgentName::parse(agent)?;
                    let found = match store.get_agent_by_name(&scope, &agent_name).await {
                        Ok(found) => found,
                        Err(airlock_store::StoreError::NotFound { .. }) if *create_agent => {
                            store.create_agent(&scope, &agent_name, "").await?
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let label = name.clone().unwrap_or_else(|| format!("{agent_name} key"));
                    store.create_api_key(&scope, KeyOwner::Agent(found.id), &label, expires_at).await?
                }
                (Some(tenant), None, Some(user), None) => {
                    let scope = scope(store, tenant).await?;
                    let found = store.get_user_by_email(&scope, &Email::parse(user)?).await?;
                    let label = name.clone().unwrap_or_else(|| format!("{} key", found.email));
                    store.create_api_key(&scope, KeyOwner::User(found.id), &label, expires_at).await?
                }
                _ => bail!(
                    "name the key's owner: `--tenant T --agent NAME`, `--tenant T --user EMAIL`, or `--operator NAME`"
                ),
            };
            if output.json {
                return print_json(&CreatedKeyOutput { key: &created.key, secret: created.secret.expose() });
            }
            println!("created API key {} ({})", created.key.id, created.key.name);
            if let Some(at) = created.key.expires_at {
                println!("expires: {at}");
            }
            println!("key: {}", created.secret.expose());
            println!("Store it now: it cannot be shown again.");
        }
        KeyCommand::List { tenant, output } => {
            let keys = store.list_api_keys(&scope(store, tenant).await?).await?;
            if output.json {
                return print_json(&keys);
            }
            println!("{:<38} {:<8} {:<26} {:<9} NAME", "ID", "OWNER", "CREATED", "STATE");
            let now = Timestamp::now();
            for k in keys {
                let owner = match k.owner {
                    KeyOwner::User(_) => "user",
                    KeyOwner::Agent(_) => "agent",
                    KeyOwner::Operator(_) => "operator",
                };
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|at| at <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<38} {:<8} {:<26} {:<9} {}",
                    k.id,
                    owner,
                    k.created_at.to_string(),
                    state,
                    k.name
                );
            }
        }
        KeyCommand::Revoke { tenant, id, output } => {
            let scope = scope(store, tenant).await?;
            let key = store.revoke_api_key(&scope, &ApiKeyId::parse(id)?).await?;
            if output.json {
                return print_json(&key);
            }
            println!("revoked API key {}", key.id);
        }
    }
    Ok(())
}

fn read_keys(keys: &[String]) -> anyhow::Result<Vec<NoteVerifier>> {
    let mut out = Vec::new();
    for key in keys {
        let text = match key.strip_prefix('@') {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("cannot read key file `{path}`"))?
            }
            None => key.clone(),
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            out.push(NoteVerifier::parse(line).with_context(|| format!("`{line}`"))?);
        }
    }
    Ok(out)
}

fn verify(
    file: &std::path::Path,
    keys: &[String],
    checkpoint: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let verifiers = read_keys(keys)?;
    let expected = match checkpoint {
        Some(path) => {
            let note =
                std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            Some(
                Checkpoint::verify(&note, &verifiers)
                    .context("the given checkpoint does not verify with the given keys")?,
            )
        }
        None => None,
    };
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open `{}`", file.display()))?,
    );
    match airlock_audit::verify_export(reader, &verifiers, expected.as_ref()) {
        Ok(summary) => {
            println!("{summary}");
            Ok(())
        }
        Err(error) => bail!("the audit log does not verify: {error}"),
    }
}

async fn audit(store: &Store, command: &AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export { tenant, output } => {
            let scope = scope(store, tenant).await?;
            let mut out: Box<dyn std::io::Write> = match output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create `{}`", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let (header, size) = store.audit_export_begin(&scope, "jsonl").await?;
            writeln!(out, "{header}")?;
            let mut from = 0;
            while from < size {
                for line in store.audit_export_page(&scope, from, size, 1000).await? {
                    writeln!(out, "{line}")?;
                }
                from += 1000;
                if output.is_some() {
                    eprint!("\rexported {} of {size} entries", from.min(size));
                }
            }
            out.flush()?;
            if output.is_some() {
                eprintln!();
            }
        }
        AuditCommand::Verify { .. } => {}
        AuditCommand::Keys { tenant } => {
            for key in store.audit_keys(&scope(store, tenant).await?).await? {
                println!("{}", key.verifier);
            }
        }
        AuditCommand::Checkpoint { tenant } => {
            print!("{}", store.audit_checkpoint(&scope(store, tenant).await?).await?.note);
        }
        AuditCommand::RotateKey { tenant } => {
            let key = store.rotate_signing_key(&scope(store, tenant).await?).await?;
            println!("signing key {} is now current: {}", key.version, key.verifier);
        }
    }
    Ok(())
}
