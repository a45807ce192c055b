//! Safe extraction of tar and tar.gz streams into a fresh staging directory.
//!
//! Every entry is checked before it is written: `..` and absolute paths, symlinks whose
//! target leaves the tree, hard links to outside, and device or FIFO entries are refused
//! with the entry named. Extraction always goes into a staging directory that nothing
//! else uses, so a refused archive leaves `dest` untouched (the caller removes the
//! staging directory).

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why an archive was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive refused: entry {entry:?} {reason}")]
    Hostile { entry: String, reason: String },
    #[error("archive unreadable: {0}")]
    Read(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// What was extracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
}

/// Normalises an entry path: only plain names (and `.`) are allowed.
fn safe_relative(entry: &str, p: &Path) -> Result<PathBuf, ExtractError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(hostile(entry, "contains `..`"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(hostile(entry, "is an absolute path"));
            }
        }
    }
    Ok(out)
}

fn hostile(entry: &str, reason: &str) -> ExtractError {
    ExtractError::Hostile {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

/// Whether `target`, seen from the directory `base` (relative to the root), stays inside
/// the root.
fn link_stays_inside(base: &Path, target: &Path) -> bool {
    let mut depth: Vec<std::ffi::OsString> = base
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Whether a stream starts like gzip; the reader is not consumed.
fn is_gzip<R: BufRead>(r: &mut R) -> Result<bool, ExtractError> {
    let head = r
        .fill_buf()
        .map_err(|e| ExtractError::Read(e.to_string()))?;
    Ok(head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b)
}

/// Extracts a tar or tar.gz stream (told apart by content) into `root`, which must exist
/// and be empty. Returns the reader afterwards so the caller can drain it (the checksum
/// covers every byte).
pub fn unpack<R: Read>(reader: R, root: &Path) -> Result<(Stats, BufReader<R>), ExtractError> {
    let mut buffered = BufReader::with_capacity(256 << 10, reader);
    if is_gzip(&mut buffered)? {
        let mut gz = flate2::bufread::MultiGzDecoder::new(buffered);
        let stats = unpack_tar(&mut gz, root)?;
        // Read the rest of the gzip stream (tar padding) so the checksum sees everything.
        std::io::copy(&mut gz, &mut std::io::sink())
            .map_err(|e| ExtractError::Read(format!("gzip: {e}")))?;
        Ok((stats, gz.into_inner()))
    } else {
        let stats = unpack_tar(&mut buffered, root)?;
        Ok((stats, buffered))
    }
}

/// Regular files up to this size are handed to the writer threads whole.
const SMALL_FILE: u64 = 256 << 10;
/// Files queued for the writers at most (bounds memory to a few MiB).
const QUEUE: usize = 32;

struct FileJob {
    name: String,
    dst: PathBuf,
    data: Vec<u8>,
    mode: u32,
    mtime: u64,
}

#[derive(Default)]
struct WriterState {
    queue: std::collections::VecDeque<FileJob>,
    /// Queued or being written.
    outstanding: usize,
    pending_paths: std::collections::HashSet<PathBuf>,
    error: Option<ExtractError>,
    closed: bool,
}

/// Writer threads for small files. Creating a file costs far more kernel time than
/// writing 25 KB into it, and one thread would leave the other cores idle. Only plain
/// files go here; anything whose meaning depends on order (directories over a pending
/// path, links, big files, a second entry of the same name) waits for the queue to
/// drain first, so the archive's order is kept wherever it matters.
#[derive(Default)]
struct Writers {
    state: std::sync::Mutex<WriterState>,
    cv: std::sync::Condvar,
}

impl Writers {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&self, job: FileJob) -> Result<(), ExtractError> {
        let mut st = self.lock();
        while st.queue.len() >= QUEUE && st.error.is_none() {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        st.pending_paths.insert(job.dst.clone());
        st.outstanding += 1;
        st.queue.push_back(job);
        self.cv.notify_all();
        Ok(())
    }

    fn is_pending(&self, p: &Path) -> bool {
        self.lock().pending_paths.contains(p)
    }

    /// Waits until every queued file is written; returns the first write error.
    fn barrier(&self) -> Result<(), ExtractError> {
        let mut st = self.lock();
        while st.outstanding > 0 {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    fn work(&self) {
        loop {
            let job = {
                let mut st = self.lock();
                loop {
                    if let Some(j) = st.queue.pop_front() {
                        self.cv.notify_all();
                        break j;
                    }
                    if st.closed {
                        return;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = write_small(&job);
            let mut st = self.lock();
            st.outstanding -= 1;
            st.pending_paths.remove(&job.dst);
            if let Err(e) = result
                && st.error.is_none()
            {
                st.error = Some(e);
            }
            self.cv.notify_all();
        }
    }
}

fn write_small(job: &FileJob) -> Result<(), ExtractError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| ExtractError::Write {
        path: job.name.clone(),
        reason: e.to_string(),
    };
    // create_new + O_NOFOLLOW: never through a link, never over something unexpected
    // (the extracting thread removed any earlier entry of this name).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&job.dst)
        .map_err(err)?;
    f.write_all(&job.data).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(job.mode))
        .map_err(err)?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(job.mtime);
    f.set_modified(mtime).map_err(err)?;
    Ok(())
}

fn unpack_tar<R: Read>(reader: R, root: &Path) -> Result<Stats, ExtractError> {
    let writers = Writers::default();
    let threads = std::env::var("CORRAL_EXTRACT_WRITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        // One writer beside the decompressing thread measured best: more writers in
        // the same directories contend on the directory lock (bench/deploy.sh).
        .unwrap_or(1)
        .clamp(1, 8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| writers.work());
        }
        let result = unpack_entries(reader, root, &writers).and_then(|stats| {
            writers.barrier()?;
            Ok(stats)
        });
        writers.close();
        result
    })
}

fn unpack_entries<R: Read>(
    reader: R,
    root: &Path,
    writers: &Writers,
) -> Result<Stats, ExtractError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let mut stats = Stats::default();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| ExtractError::Read(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ExtractError::Read(e.to_string()))?;
        let raw_path = entry
            .path()
            .map_err(|e| ExtractError::Read(format!("bad entry name: {e}")))?
            .into_owned();
        let name = raw_path.to_string_lossy().into_owned();
        let rel = safe_relative(&name, &raw_path)?;
        let kind = entry.header().entry_type();
        // A hard link's source, resolved inside the root (the tar crate would resolve it
        // against the process's working directory).
        let mut link_source: Option<PathBuf> = None;
        use tar::EntryType as T;
        match kind {
            T::Char | T::Block | T::Fifo => {
                return Err(hostile(&name, "is a device or FIFO file"));
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ExtractError::Read(e.to_string()))?
                    .ok_or_else(|| hostile(&name, "is a symlink without a target"))?
                    .into_owned();
                let base = rel.parent().unwrap_or(Path::new(""));
                if !link_stays_inside(base, &target) {
                    return Err(hostile(
                        &name,
                        &format!(
                            "is a symlink pointing outside the archive ({})",
                            target.display()
                        ),
                    ));
                }
            }
            T::Link => {
                // Its source may still be queued for writing.
                writers.barrier()?;
                let target = entry
                    .link_name()
                    .map_err(|e| ExtractError::Read(e.to_string()))?
                    .ok_or_else(|| hostile(&name, "is a hard link without a target"))?
                    .into_owned();
                let t = safe_relative(&name, &target).map_err(|_| {
                    hostile(
                        &name,
                        &format!(
                            "is a hard link to outside the archive ({})",
                            target.display()
                        ),
                    )
                })?;
                let full = root.join(&t);
                let meta = std::fs::symlink_metadata(&full).map_err(|_| {
                    hostile(
                        &name,
                        &format!(
                            "is a hard link to {} which is not in the archive",
                            t.display()
                        ),
                    )
                })?;
                if !meta.is_file() {
                    return Err(hostile(
                        &name,
                        "is a hard link to something that is not a plain file",
                    ));
                }
                link_source = Some(full);
            }
            T::Regular | T::Continuous | T::Directory | T::GNUSparse => {}
            other => {
                return Err(hostile(
                    &name,
                    &format!("has an unsupported type {other:?}"),
                ));
            }
        }
        if rel.as_os_str().is_empty() {
            // The `./` entry: the caller sets the mode of the root (dest_mode).
            continue;
        }
        // Never write through a symlink that an earlier entry created.
        let mut walk = root.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                walk.push(c);
                if let Ok(m) = std::fs::symlink_metadata(&walk)
                    && m.file_type().is_symlink()
                {
                    return Err(hostile(&name, "would be written through a symlink"));
                }
            }
        }
        let dst = root.join(&rel);
        let small = matches!(kind, T::Regular | T::Continuous)
            && link_source.is_none()
            && entry.header().size().is_ok_and(|n| n <= SMALL_FILE);
        if !small && kind != T::Directory || writers.is_pending(&dst) {
            writers.barrier()?;
        }
        if kind == T::Directory {
            std::fs::create_dir_all(&dst).map_err(|e| ExtractError::Write {
                path: name.clone(),
                reason: e.to_string(),
            })?;
            let mode = entry.header().mode().unwrap_or(0o755) & 0o777;
            dir_modes.push((dst, mode));
            stats.entries += 1;
            continue;
        }
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ExtractError::Write {
                path: name.clone(),
                reason: e.to_string(),
            })?;
        }
        // A later entry of the same name replaces the earlier one, never follows it.
        if let Ok(m) = std::fs::symlink_metadata(&dst)
            && !m.is_dir()
        {
            let _ = std::fs::remove_file(&dst);
        }
        stats.bytes += entry.header().size().unwrap_or(0);
        if small {
            let mut data = Vec::with_capacity(entry.header().size().unwrap_or(0) as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| ExtractError::Read(e.to_string()))?;
            writers.submit(FileJob {
                name: name.clone(),
                dst,
                data,
                mode: entry.header().mode().unwrap_or(0o644) & 0o777,
                mtime: entry.header().mtime().unwrap_or(0),
            })?;
            stats.entries += 1;
            continue;
        }
        let written = match &link_source {
            Some(src) => std::fs::hard_link(src, &dst),
            None => entry.unpack(&dst).map(|_| ()),
        };
        written.map_err(|e| ExtractError::Write {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        stats.entries += 1;
    }
    writers.barrier()?;
    // Directory modes last, deepest first, so a read-only directory does not block its
    // own files.
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in dir_modes.iter().rev() {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode | 0o700));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("corral-extract-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A tar with one entry written with raw header bytes (so hostile names get through).
    fn raw_tar(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        {
            let b = h.as_old_mut();
            b.name[..name.len()].copy_from_slice(name.as_bytes());
            b.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn fixture_tar_extracts() {
        let root = tmp("fixture");
        let tar = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stretcher/testdata/test.tar"
        ))
        .unwrap();
        let (stats, _) = unpack(&tar[..], &root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("foo/baz")).unwrap(),
            "baz\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("exclude.txt")).unwrap(),
            "*.pid\nbaz\n"
        );
        assert_eq!(stats.entries, 4);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn hostile_entries_are_refused() {
        use tar::EntryType as T;
        for (name, kind, link, needle) in [
            ("../evil", T::Regular, "", "`..`"),
            ("a/../../evil", T::Regular, "", "`..`"),
            ("/etc/evil", T::Regular, "", "absolute"),
            ("link", T::Symlink, "/etc/passwd", "outside"),
            ("a/link", T::Symlink, "../../x", "outside"),
            ("hard", T::Link, "../../etc/passwd", "outside"),
            ("hard", T::Link, "/etc/passwd", "outside"),
            ("dev", T::Char, "", "device"),
            ("blk", T::Block, "", "device"),
            ("fifo", T::Fifo, "", "FIFO"),
        ] {
            let root = tmp("hostile");
            let tar = raw_tar(name, kind, link, b"x");
            let e = unpack(&tar[..], &root).unwrap_err();
            assert!(e.to_string().contains(needle), "{name}: {e}");
            assert!(
                !Path::new("/tmp/evil").exists() && !root.parent().unwrap().join("evil").exists()
            );
            std::fs::remove_dir_all(root).unwrap();
        }
    }

    #[test]
    fn symlink_inside_is_fine_but_not_written_through() {
        let root = tmp("symlink");
        let mut tar = raw_tar("a/ok", tar::EntryType::Symlink, "../b", b"");
        tar.truncate(tar.len() - 1024);
        tar.extend(raw_tar("a/ok/file", tar::EntryType::Regular, "", b"x"));
        let e = unpack(&tar[..], &root).unwrap_err();
        assert!(e.to_string().contains("through a symlink"), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn hard_link_inside_points_at_the_extracted_file() {
        let root = tmp("hardlink");
        let mut tar = raw_tar("dir/a", tar::EntryType::Regular, "", b"data");
        tar.truncate(tar.len() - 1024);
        tar.extend(raw_tar("b", tar::EntryType::Link, "./dir/a", b""));
        unpack(&tar[..], &root).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("b")).unwrap(), "data");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn later_entry_of_the_same_name_wins_and_many_files_land() {
        let root = tmp("dupes");
        let mut tar = Vec::new();
        for (name, data) in [("a", &b"one"[..]), ("d/b", b"x"), ("a", b"two")] {
            let mut t = raw_tar(name, tar::EntryType::Regular, "", data);
            t.truncate(t.len() - 1024);
            tar.extend(t);
        }
        for i in 0..300 {
            let mut t = raw_tar(
                &format!("many/f{i}"),
                tar::EntryType::Regular,
                "",
                format!("{i}").as_bytes(),
            );
            t.truncate(t.len() - 1024);
            tar.extend(t);
        }
        tar.extend([0u8; 1024]);
        let (stats, _) = unpack(&tar[..], &root).unwrap();
        assert_eq!(stats.entries, 303);
        assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "two");
        for i in [0, 150, 299] {
            assert_eq!(
                std::fs::read_to_string(root.join(format!("many/f{i}"))).unwrap(),
                i.to_string()
            );
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn garbage_is_a_read_error() {
        let root = tmp("garbage");
        let e = unpack(&[0x1f, 0x8b, 1, 2, 3][..], &root).unwrap_err();
        assert!(matches!(e, ExtractError::Read(_)), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
