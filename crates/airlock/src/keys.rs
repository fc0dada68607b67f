//! `airlock keys`: the key hierarchy. Rotate the key-encryption key or data keys, make a new
//! key file, bring a tenant's own key, and show which key wraps what.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_store::{DekRotation, Principal, RotateOptions, Store};
use airlock_types::TenantSlug;
use airlock_vault::ProviderSpec;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

/// Key-hierarchy commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rotate keys: the key-encryption key (`--kek`: re-wrap every data key) or data keys
    /// (`--tenant`, `--all-tenants`, `--platform`: re-encrypt every sealed row). Safe to run
    /// beside a live server, resumable after any interruption, and audited.
    Rotate(RotateArgs),
    /// Write a new random key-encryption key to a new owner-only file (for the `file`
    /// provider). List the old one under `key_provider.previous`, point `key_provider.path`
    /// at the new one, then run `airlock keys rotate --kek`.
    GenerateKek {
        /// The file to create; refused if it exists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show, set or clear a tenant's own key-encryption key (BYOK).
    Tenant(TenantKekArgs),
}

/// What to rotate.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["kek", "tenant", "all_tenants", "platform"])))]
pub struct RotateArgs {
    /// Re-wrap every data key under its current key-encryption key.
    #[arg(long)]
    kek: bool,
    /// With `--kek`: re-wrap every data key, also those already under the current key's id
    /// (after rotating the key inside Vault or KMS, where its id stays the same).
    #[arg(long, requires = "kek")]
    all: bool,
    /// Rotate this tenant's data key.
    #[arg(long)]
    tenant: Option<String>,
    /// Rotate every tenant's data key, one tenant after another.
    #[arg(long)]
    all_tenants: bool,
    /// Rotate the platform's own data key (it seals the platform log's signing key).
    #[arg(long)]
    platform: bool,
    /// Report what would change and check that every row opens; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long the new data key must exist before the old one is destroyed: at least the
    /// `key_provider.cache_ttl_secs` of every server on this data directory. `0s` when no
    /// server runs.
    #[arg(long, default_value = "120s", value_parser = parse_grace)]
    grace: Duration,
    /// Rows re-encrypted per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A tenant's own key.
#[derive(Debug, Args)]
pub struct TenantKekArgs {
    /// The tenant's slug.
    slug: String,
    /// Set the tenant's own provider, as JSON: `{"kind":"aws_kms","key_id":"arn:…"}` or
    /// `{"kind":"vault_transit","address":"https://…","key":"…"}`.
    #[arg(long, conflicts_with = "platform")]
    set: Option<String>,
    /// Return the tenant to the platform's key.
    #[arg(long)]
    platform: bool,
}

fn parse_grace(text: &str) -> Result<Duration, String> {
    if text.trim().trim_end_matches(['s', 'm', 'h', 'd']) == "0" {
        return Ok(Duration::ZERO);
    }
    crate::duration::parse(text)
}

/// Runs a command that needs no data directory.
pub fn run_offline(command: &KeysCommand) -> Option<anyhow::Result<()>> {
    match command {
        KeysCommand::GenerateKek { out } => Some(generate_kek(out)),
        _ => None,
    }
}

fn generate_kek(out: &std::path::Path) -> anyhow::Result<()> {
    let key = airlock_vault::provider::new_key_base64();
    airlock_vault::provider::write_owner_only(out, format!("{key}\n").as_bytes())
        .with_context(|| format!("cannot create `{}`", out.display()))?;
    let kek = airlock_vault::provider::LocalKek::from_file(out, false)?;
    println!(
        "wrote a new key-encryption key to {} (id {})",
        out.display(),
        airlock_vault::KekProvider::id(&kek)
    );
    Ok(())
}

/// Runs a command on the data directory.
pub async fn run(store: &Store, command: &KeysCommand) -> anyhow::Result<()> {
    let operator = Principal::local_operator();
    match command {
        KeysCommand::GenerateKek { out } => generate_kek(out),
        KeysCommand::Tenant(args) => tenant_kek(store, &operator, args).await,
        KeysCommand::Rotate(args) => rotate(store, &operator, args).await,
    }
}

async fn tenant_kek(store: &Store, operator: &Principal, args: &TenantKekArgs) -> anyhow::Result<()> {
    let scope = store.operator_scope(operator, &TenantSlug::parse(&args.slug)?).await?;
    let kek = if let Some(json) = &args.set {
        let spec: ProviderSpec = serde_json::from_str(json).context("--set: not a provider")?;
        store.set_tenant_kek(operator, &scope, Some(spec)).await?
    } else if args.platform {
        store.set_tenant_kek(operator, &scope, None).await?
    } else {
        store.tenant_kek(operator, &scope).await?
    };
    match kek.own {
        Some(spec) => {
            println!("tenant `{}`: its own key {} ({})", args.slug, kek.kek_id, serde_json::to_string(&spec)?)
        }
        None => println!("tenant `{}`: the platform's key {}", args.slug, kek.kek_id),
    }
    Ok(())
}

async fn rotate(store: &Store, operator: &Principal, args: &RotateArgs) -> anyhow::Result<()> {
    let options =
        RotateOptions { dry_run: args.dry_run, grace: args.grace, batch: args.batch, all: args.all };
    if args.kek {
        let report = store.rotate_kek(operator, options).await?;
        if args.json {
            let failed: Vec<_> = report
                .failed
                .iter()
                .map(|(owner, version, reason)| serde_json::json!({"owner": owner, "version": version, "reason": reason}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"kek": report.kek_id, "dry_run": report.dry_run, "rewrapped": report.rewrapped,
                    "already_current": report.current, "failed": failed})
            );
        } else {
            let verb = if report.dry_run { "would re-wrap" } else { "re-wrapped" };
            println!(
                "{verb} {} data keys under {} ({} already current)",
                report.rewrapped, report.kek_id, report.current
            );
            for (owner, version, reason) in &report.failed {
                println!("  could not re-wrap {owner} v{version}: {reason}");
            }
        }
        if !report.failed.is_empty() {
            bail!("{} data keys were not re-wrapped; fix the cause and run again", report.failed.len());
        }
        return Ok(());
    }
    let mut targets: Vec<Option<String>> = Vec::new();
    if args.platform {
        targets.push(None);
    }
    if let Some(slug) = &args.tenant {
        targets.push(Some(slug.clone()));
    }
    if args.all_tenants {
        targets.extend(store.list_tenants(operator).await?.into_iter().map(|t| Some(t.slug.to_string())));
    }
    let mut unfinished = 0usize;
    for target in targets {
        let started = Instant::now();
        let show = Progress::new(args.json);
        let report = match &target {
            None => store.rotate_platform_dek(operator, options, &|n| show.rows(n)).await?,
            Some(slug) => {
                let scope = store.operator_scope(operator, &TenantSlug::parse(slug)?).await?;
                store.rotate_tenant_dek(operator, &scope, options, &|n| show.rows(n)).await?
            }
        };
        show.done();
        let name = target.as_deref().map_or_else(|| "the platform".to_owned(), |s| format!("tenant `{s}`"));
        print_rotation(&name, &report, started.elapsed(), args.json);
        if !report.dry_run && !report.finished() {
            unfinished += 1;
        }
    }
    if unfinished > 0 {
        bail!(
            "{unfinished} rotation(s) did not finish: the old data keys are kept; fix the rows listed and run again"
        );
    }
    Ok(())
}

fn print_rotation(name: &str, report: &DekRotation, elapsed: Duration, json: bool) {
    let rate = report.reencrypted as f64 / elapsed.as_secs_f64().max(1e-9);
    if json {
        let failed: Vec<_> = report
            .failed
            .iter()
            .map(|b| serde_json::json!({"table": b.table, "column": b.column, "row": b.row, "reason": b.reason}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"owner": report.owner, "dry_run": report.dry_run, "from": report.from, "to": report.to,
                "resumed": report.resumed, "reencrypted": report.reencrypted, "remaining": report.remaining,
                "failed": failed, "destroyed": report.destroyed, "finished": report.finished(),
                "seconds": elapsed.as_secs_f64(), "rows_per_second": rate})
        );
        return;
    }
    if report.dry_run {
        let what = if report.resumed { "finish the unfinished rotation to" } else { "add" };
        println!(
            "{name}: would {what} data key v{} and re-encrypt {} rows; {} rows do not open",
            report.to,
            report.reencrypted,
            report.failed.len()
        );
    } else {
        let resumed = if report.resumed { " (resumed)" } else { "" };
        println!(
            "{name}: re-encrypted {} rows under data key v{}{resumed} in {:.1}s ({rate:.0} rows/s); destroyed {:?}",
            report.reencrypted,
            report.to,
            elapsed.as_secs_f64(),
            report.destroyed
        );
    }
    for bad in &report.failed {
        println!("  does not open: {}.{} row `{}`: {}", bad.table, bad.column, bad.row, bad.reason);
    }
}

/// A one-line progress display on a terminal's standard error.
struct Progress {
    on: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        Self { on: !json && std::io::stderr().is_terminal() }
    }

    fn rows(&self, n: u64) {
        if self.on {
            eprint!("\r  {n} rows re-encrypted");
        }
    }

    fn done(&self) {
        if self.on {
            eprintln!();
        }
    }
}
