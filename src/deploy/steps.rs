//! One deploy on this host, in stretcher's order (reference/stretcher.md §6), with its
//! flaws fixed:
//!
//! 1. the archive is streamed once: downloaded, hashed and extracted in the same pass
//!    into a private staging directory (nothing touches `dest` before the checksum is
//!    known to match and every entry was found safe);
//! 2. pre commands; 3. sync (rsync / mv / release); 4. post commands;
//! 5. success commands, or failure commands with the log on stdin.
//!
//! Memory stays flat whatever the archive size: a few chunks in flight between the
//! download task and the extracting thread.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::Digest;

use super::extract;
use super::hooks::{self, HookOpts};
use super::log::DeployLog;
use super::manifest::{Checksum, HashKind, Manifest, SyncStrategy};
use super::source;
use super::sync;

/// Download and command controls (the agent's flags).
#[derive(Debug, Clone)]
pub struct DeployOpts {
    /// `CORRAL_DEPLOY_ALLOW` when set: the source and its every redirect hop must be under
    /// one of these prefixes. `None`: anywhere, the checksum pins the content.
    pub allow: Option<Vec<String>>,
    pub retry: u32,
    pub retry_wait: Duration,
    /// Covers opening (with retries), download, checksum and extraction.
    pub fetch_timeout: Option<Duration>,
    /// Bytes per second.
    pub max_bandwidth: Option<u64>,
    /// `-v` by default; empty leaves the flag out.
    pub rsync_verbose: String,
    pub hooks: HookOpts,
    /// Extraction bounds; `None`: `CORRAL_DEPLOY_MAX_*` from the environment.
    pub limits: Option<extract::Limits>,
}

impl Default for DeployOpts {
    fn default() -> Self {
        DeployOpts {
            allow: None,
            retry: 0,
            retry_wait: Duration::from_secs(3),
            fetch_timeout: None,
            max_bandwidth: None,
            rsync_verbose: "-v".into(),
            hooks: HookOpts {
                timeout: Some(Duration::from_secs(30 * 60)),
                output: hooks::Output::Inherit,
            },
            limits: None,
        }
    }
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunResult {
    /// `None` on success; the error otherwise.
    pub error: Option<String>,
    pub duration: Duration,
}

/// Runs a manifest: the deploy, then success or failure commands (stretcher's `Run`).
pub(crate) async fn run(m: &Manifest, opts: &DeployOpts, log: &DeployLog) -> RunResult {
    let started = Instant::now();
    let result = deploy(m, opts, log).await;
    let dest = m.dest.as_deref();
    let error = match result {
        Ok(()) => {
            log.line("Deploy manifest succeeded.");
            if let Err(e) = hooks::run_piped(&m.commands.success, dest, &opts.hooks, log).await {
                log.line(format!("Success command failed: {e}"));
            }
            log.line("Done");
            None
        }
        Err(e) => {
            log.line(format!("Deploy manifest failed: {e}"));
            if let Err(fe) = hooks::run_piped(&m.commands.failure, dest, &opts.hooks, log).await {
                log.line(format!("Failure command failed: {fe}"));
            }
            Some(format!("Deploy manifest failed: {e}"))
        }
    };
    RunResult {
        error,
        duration: started.elapsed(),
    }
}

/// The deploy steps proper (stretcher's `Manifest.Deploy`).
pub(crate) async fn deploy(m: &Manifest, opts: &DeployOpts, log: &DeployLog) -> Result<(), String> {
    let dest = m.dest.as_deref();
    let (Some(src), Some(dest_path)) = (m.src.as_deref(), dest) else {
        // Commands-only mode.
        hooks::run_captured(&m.commands.pre, dest, &opts.hooks, log).await?;
        hooks::run_captured(&m.commands.post, dest, &opts.hooks, log).await?;
        return Ok(());
    };
    let Some(checksum) = &m.checksum else {
        return Err("checksum must be md5, sha1, sha256, sha512 hex string".into());
    };
    let release_id = release_id(checksum);
    let staging = make_staging(m, dest_path, &release_id)?;
    let guard = Cleanup(staging.clone());
    fetch_and_extract(src, checksum, &staging, opts, log).await?;
    use std::os::unix::fs::PermissionsExt;
    log.line(format!("Set dest mode {:#o}", m.dest_mode));
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(m.dest_mode))
        .map_err(|e| format!("chmod {}: {e}", staging.display()))?;
    hooks::run_captured(&m.commands.pre, dest, &opts.hooks, log).await?;
    match m.sync_strategy {
        SyncStrategy::Rsync => {
            sync::rsync(m, &staging, dest_path, &opts.rsync_verbose, log).await?;
        }
        SyncStrategy::Mv => sync::mv(&staging, dest_path, log)?,
        SyncStrategy::Release => {
            sync::release(&staging, dest_path, &release_id, m.keep_releases, log)?;
        }
    }
    drop(guard);
    hooks::run_captured(&m.commands.post, dest, &opts.hooks, log).await?;
    Ok(())
}

/// Removes a staging directory when dropped (if it is still there).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.symlink_metadata().is_ok() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn release_id(c: &Checksum) -> String {
    let ts = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.3fZ")
        .to_string();
    format!("{ts}-{}", &c.hex[..8.min(c.hex.len())])
}

/// A private directory for the extracted tree: in `$TMPDIR` for rsync (as stretcher),
/// beside `dest` for mv (so the rename stays on one filesystem), in `dest/releases` for
/// release.
fn make_staging(m: &Manifest, dest: &Path, release_id: &str) -> Result<PathBuf, String> {
    let dir = match m.sync_strategy {
        SyncStrategy::Rsync => std::env::temp_dir().join(format!("corral_src{}", unique())),
        SyncStrategy::Mv => {
            let parent = dest
                .parent()
                .ok_or_else(|| format!("dest {} has no parent directory", dest.display()))?;
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            parent.join(format!(".{name}.corral-{}", unique()))
        }
        SyncStrategy::Release => {
            let r = sync::releases_dir(dest);
            std::fs::create_dir_all(&r).map_err(|e| format!("mkdir {}: {e}", r.display()))?;
            r.join(format!(".partial-{release_id}"))
        }
    };
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    Ok(dir)
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(kind: HashKind) -> Hasher {
        match kind {
            HashKind::Md5 => Hasher::Md5(md5::Md5::new()),
            HashKind::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashKind::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashKind::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

enum Msg {
    Data(Bytes),
    End,
    Failed(String),
}

/// The extracting thread's view of the download: a blocking reader over the chunks the
/// download task sends (which hashes them on its own core).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Msg>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(b)) => self.current = b,
                Some(Msg::End) => self.ended = true,
                Some(Msg::Failed(e)) => return Err(std::io::Error::other(e)),
                None => return Err(std::io::Error::other("download interrupted")),
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        Ok(n)
    }
}

/// Downloads `src`, hashing and extracting it into `staging` in one pass, then compares
/// the checksum.
async fn fetch_and_extract(
    src: &str,
    checksum: &Checksum,
    staging: &Path,
    opts: &DeployOpts,
    log: &DeployLog,
) -> Result<(), String> {
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(16);
    let limits = match opts.limits {
        Some(l) => l,
        None => extract::Limits::from_env()?,
    };
    log.line(format!("Extract archive: {src} to {}", staging.display()));
    let extractor = spawn_extractor(rx, staging.to_path_buf(), limits);
    let limiter = bandwidth_limiter(opts, log);
    let download = download(src, opts, log, tx, Hasher::new(checksum.kind), limiter);
    let downloaded = match opts.fetch_timeout.filter(|t| !t.is_zero()) {
        Some(t) => tokio::time::timeout(t, download).await.unwrap_or_else(|_| {
            Err(format!(
                "timeout {} reached while fetching src {src}",
                crate::text::format_duration(t)
            ))
        }),
        None => download.await,
    };
    // The sender is gone now; the extractor ends either way.
    let extracted = extractor
        .await
        .map_err(|e| format!("extractor crashed: {e}"))?;
    let downloaded = downloaded?;
    let stats = extracted?;
    let (bytes, got) = downloaded.ok_or("download stopped before its end")?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    log.line(format!(
        "Wrote {bytes} bytes, {} entries to {} (in {:.3}s, {:.0} bytes/s)",
        stats.entries,
        staging.display(),
        secs,
        bytes as f64 / secs
    ));
    if got != checksum.hex {
        return Err(format!(
            "checksum mismatch. expected:{} got:{got}",
            checksum.hex
        ));
    }
    log.line(format!("Checksum ok: {got}"));
    Ok(())
}

/// The extracting thread: unpacks what the download sends into `root`, then drains the
/// rest of the stream (so the whole archive is hashed).
fn spawn_extractor(
    rx: tokio::sync::mpsc::Receiver<Msg>,
    root: PathBuf,
    limits: extract::Limits,
) -> tokio::task::JoinHandle<Result<extract::Stats, String>> {
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
        ended: false,
    };
    tokio::task::spawn_blocking(move || {
        let (stats, rest) =
            extract::unpack_with(reader, &root, &limits).map_err(|e| e.to_string())?;
        let mut reader = rest;
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| e.to_string())?;
        Ok::<_, String>(stats)
    })
}

/// `--max-bandwidth` as a limiter and its rate (also the largest piece it is asked for).
type Limiter = (governor::DefaultDirectRateLimiter, NonZeroU32);

fn bandwidth_limiter(opts: &DeployOpts, log: &DeployLog) -> Option<Limiter> {
    opts.max_bandwidth.and_then(|b| {
        let rate = NonZeroU32::new(u32::try_from(b).unwrap_or(u32::MAX))?;
        log.line(format!("Set max bandwidth {b}/sec"));
        Some((
            governor::RateLimiter::direct(governor::Quota::per_second(rate)),
            rate,
        ))
    })
}

/// The download task: opens `src` (with retries), hashes every chunk and hands it to the
/// extractor at the allowed pace. `Ok(None)`: the extractor stopped first (it says why);
/// `Ok(Some((bytes, hex)))`: the whole body was read.
async fn download(
    src: &str,
    opts: &DeployOpts,
    log: &DeployLog,
    tx: tokio::sync::mpsc::Sender<Msg>,
    mut hasher: Hasher,
    limiter: Option<Limiter>,
) -> Result<Option<(u64, String)>, String> {
    let mut bytes = 0u64;
    let mut body =
        source::open_with_retry(src, opts.allow.as_deref(), opts.retry, opts.retry_wait, log)
            .await?;
    loop {
        let chunk = match body.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let e = format!("get src failed: {e}");
                let _ = tx.send(Msg::Failed(e.clone())).await;
                return Err(e);
            }
        };
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        if !send_paced(&tx, chunk, limiter.as_ref()).await {
            return Ok(None);
        }
    }
    let _ = tx.send(Msg::End).await;
    Ok(Some((bytes, hasher.hex())))
}

/// Sends one chunk to the extractor, in pieces the limiter allows; false when the
/// extractor is gone.
async fn send_paced(
    tx: &tokio::sync::mpsc::Sender<Msg>,
    chunk: Bytes,
    limiter: Option<&Limiter>,
) -> bool {
    let Some((lim, rate)) = limiter else {
        return tx.send(Msg::Data(chunk)).await.is_ok();
    };
    let mut off = 0;
    while off < chunk.len() {
        let n = (chunk.len() - off).min(rate.get() as usize);
        if let Some(nz) = NonZeroU32::new(n as u32) {
            let _ = lim.until_n_ready(nz).await;
        }
        if tx.send(Msg::Data(chunk.slice(off..off + n))).await.is_err() {
            return false;
        }
        off += n;
    }
    true
}
