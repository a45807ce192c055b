//! Getting the extracted tree to `dest`: stretcher's `rsync` and `mv`, and `release`
//! (`dest/releases/<id>` plus an atomic `dest/current` symlink switch).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::log::DeployLog;
use super::manifest::Manifest;

/// The directory releases live in.
pub(crate) fn releases_dir(dest: &Path) -> PathBuf {
    dest.join("releases")
}

/// `rsync -a --delete <verbose> [--exclude-from …] [--exclude …] <staging>/ <dest>/`.
pub(crate) async fn rsync(
    m: &Manifest,
    staging: &Path,
    dest: &Path,
    verbose: &str,
    log: &DeployLog,
) -> Result<(), String> {
    let mut args: Vec<String> = vec!["-a".into(), "--delete".into()];
    if !verbose.is_empty() {
        args.push(verbose.to_string());
    }
    if let Some(x) = &m.exclude_from {
        let path = staging.join(x.trim_start_matches('/'));
        if !path.is_file() {
            return Err(format!("exclude_from: {x} is not a file in the archive"));
        }
        args.push("--exclude-from".into());
        args.push(path.to_string_lossy().into_owned());
    }
    for e in &m.excludes {
        args.push("--exclude".into());
        args.push(e.clone());
    }
    let with_slash = |p: &Path| {
        let s = p.to_string_lossy().into_owned();
        if s.ends_with('/') { s } else { format!("{s}/") }
    };
    args.push(with_slash(staging));
    args.push(with_slash(dest));
    log.line(format!("rsync {args:?}"));
    let out = tokio::process::Command::new("rsync")
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run rsync: {e} (is rsync installed?)"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !text.trim().is_empty() {
        log.line(text);
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rsync failed: exit status {}",
            out.status.code().unwrap_or(-1)
        ))
    }
}

/// Renames the staging directory to `dest` (which must not exist, as in stretcher).
pub(crate) fn mv(staging: &Path, dest: &Path, log: &DeployLog) -> Result<(), String> {
    log.line(format!("mv {} {}", staging.display(), dest.display()));
    if dest.symlink_metadata().is_ok() {
        return Err(format!(
            "rename {} {}: file exists (the mv strategy needs dest to be absent; remove it in a pre command)",
            staging.display(),
            dest.display()
        ));
    }
    std::fs::rename(staging, dest)
        .map_err(|e| format!("rename {} {}: {e}", staging.display(), dest.display()))
}

/// Moves a finished staging directory to `releases/<id>`, switches `current` to it
/// atomically, and removes the oldest releases beyond `keep`. Returns the release path.
pub(crate) fn release(
    staging: &Path,
    dest: &Path,
    id: &str,
    keep: usize,
    log: &DeployLog,
) -> Result<PathBuf, String> {
    let releases = releases_dir(dest);
    let target = releases.join(id);
    std::fs::rename(staging, &target)
        .map_err(|e| format!("rename {} {}: {e}", staging.display(), target.display()))?;
    switch_current(dest, id)?;
    log.line(format!("current -> releases/{id}"));
    prune(dest, keep, log);
    Ok(target)
}

/// Points `dest/current` at `releases/<id>` in one rename (a rollback is this call with
/// an older id).
pub fn switch_current(dest: &Path, id: &str) -> Result<(), String> {
    let tmp = dest.join(format!(".current.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(id), &tmp)
        .map_err(|e| format!("symlink {}: {e}", tmp.display()))?;
    let current = dest.join("current");
    if current.is_dir() && !current.is_symlink() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "{} is a real directory; the release strategy needs it to be a symlink (move it away once)",
            current.display()
        ));
    }
    std::fs::rename(&tmp, &current).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("switch {}: {e}", current.display())
    })
}

/// Release ids, oldest first (ids sort by time).
pub(crate) fn list_releases(dest: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(releases_dir(dest))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids
}

fn prune(dest: &Path, keep: usize, log: &DeployLog) {
    let current = std::fs::read_link(dest.join("current"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let ids = list_releases(dest);
    let excess = ids.len().saturating_sub(keep);
    for id in ids.into_iter().take(excess) {
        if Some(&id) == current.as_ref() {
            continue;
        }
        let p = releases_dir(dest).join(&id);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => log.line(format!("removed old release {id}")),
            Err(e) => log.line(format!("cannot remove old release {}: {e}", p.display())),
        }
    }
}
