//! `airlock tenant export` and `airlock tenant verify-export`: a tenant's signed archive,
//! written with a progress display, and checked offline.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::time::Instant;

use airlock_audit::NoteVerifier;
use airlock_audit::archive::{read_manifest, verify_archive};
use airlock_store::{ExportChunk, Principal, Store, TenantScope};
use anyhow::{Context as _, bail};

/// Writes the tenant's archive to `output` (`-` for standard output) and reports its size and
/// speed. A failed export removes the partial file.
pub async fn export(store: &Store, scope: &TenantScope, output: &Path) -> anyhow::Result<()> {
    let to_stdout = output.as_os_str() == "-";
    let mut file: Box<dyn std::io::Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(output)
            .with_context(|| format!("cannot create `{}`", output.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<ExportChunk>(8);
    let (store2, scope2) = (store.clone(), scope.clone());
    let task =
        tokio::spawn(
            async move { store2.export_tenant(&Principal::local_operator(), &scope2, sender).await },
        );
    let started = Instant::now();
    let show = std::io::stderr().is_terminal();
    let mut written = 0u64;
    let mut failure = None;
    while let Some(chunk) = chunks.recv().await {
        if let Err(error) = file.write_all(&chunk.bytes) {
            failure = Some(anyhow::Error::from(error).context("cannot write the archive"));
            break;
        }
        written += chunk.bytes.len() as u64;
        if show {
            eprint!(
                "\r\x1b[2K  {:<40} {:>10} rows  {:>8.1} MB read  {:>8.1} MB written",
                chunk.entry,
                chunk.rows,
                chunk.uncompressed as f64 / 1e6,
                written as f64 / 1e6
            );
        }
    }
    drop(chunks);
    if show {
        eprintln!();
    }
    let outcome = task.await.context("the export task failed")?;
    let flushed = file.flush();
    drop(file);
    let result = match (failure, outcome, flushed) {
        (Some(error), _, _) => Err(error),
        (None, Err(error), _) => Err(anyhow::Error::from(error).context("the export failed")),
        (None, Ok(_), Err(error)) => Err(anyhow::Error::from(error).context("cannot write the archive")),
        (None, Ok(summary), Ok(())) => Ok(summary),
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            if !to_stdout {
                let _ = std::fs::remove_file(output);
            }
            return Err(error);
        }
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let target = if to_stdout { "standard output".to_owned() } else { format!("`{}`", output.display()) };
    eprintln!(
        "exported tenant `{}` to {target}: {} rows, {:.1} MB of data in a {:.1} MB archive, in {secs:.1}s ({:.1} MB/s)",
        scope.slug(),
        summary.rows,
        summary.uncompressed as f64 / 1e6,
        summary.archive_bytes as f64 / 1e6,
        summary.uncompressed as f64 / 1e6 / secs,
    );
    Ok(())
}

/// Verifies an archive with the given verifier keys, or, with none, with the keys the
/// archive itself carries (which proves integrity, not origin: say so).
pub fn verify(file: &Path, keys: &[NoteVerifier]) -> anyhow::Result<()> {
    let open = || std::fs::File::open(file).with_context(|| format!("cannot open `{}`", file.display()));
    let (verifiers, pinned) = if keys.is_empty() {
        match carried_keys(open()?) {
            Ok(keys) => (keys, false),
            Err(error) => bail!("the archive does not verify: {error:#}"),
        }
    } else {
        (keys.to_vec(), true)
    };
    match verify_archive(std::io::BufReader::new(open()?), &verifiers) {
        Ok(summary) => {
            println!("{summary}");
            if !pinned {
                let signed_by = read_manifest(std::io::BufReader::new(open()?))?.signed_by;
                let names: Vec<String> = signed_by.iter().map(ToString::to_string).collect();
                println!(
                    "note: checked against the keys the archive carries ({}); to know it came from your Airlock, \
                     pass --key with the tenant's verifier key from `airlock audit keys` or `/v1/audit/keys`",
                    names.join(", ")
                );
            }
            Ok(())
        }
        Err(error) => bail!("the archive does not verify: {error}"),
    }
}

/// The verifier keys in the archive's `audit/keys.json`.
fn carried_keys(file: std::fs::File) -> anyhow::Result<Vec<NoteVerifier>> {
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).context("not a ZIP archive")?;
    let mut entry = zip.by_name("audit/keys.json").context("the archive carries no `audit/keys.json`")?;
    let mut text = String::new();
    entry.by_ref().take(1 << 20).read_to_string(&mut text).context("cannot read `audit/keys.json`")?;
    let keys: Vec<String> = serde_json::from_str(&text).context("`audit/keys.json` is not a list of keys")?;
    keys.iter().map(|k| NoteVerifier::parse(k).with_context(|| format!("`{k}`"))).collect()
}
