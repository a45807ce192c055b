//! Safe extraction of tar and tar.gz streams into a fresh staging directory.
//!
//! Every entry is checked before it is written: `..` and absolute paths, device or FIFO
//! entries, sparse entries, and links are refused with the entry named. A link is judged
//! by where it really leads inside the tree the archive has built so far ([`Tree`]):
//! symlink targets are resolved through the archive's earlier symlinks, may only go up
//! through directories that exist, and must stay inside the root; a hard link may only
//! name a regular file this archive extracted earlier. No entry may replace an earlier
//! symlink or be written through one.
//!
//! Before the checksum is known the archive is untrusted, so the extraction is bounded
//! ([`Limits`], `CORRAL_DEPLOY_MAX_*`): the bytes of the (uncompressed) tar stream, the
//! number of entries, and the size of an extended header (PAX, GNU long name), which is
//! refused before it is read into memory. The extraction stops the moment a bound is
//! crossed. Errors name what failed and never quote the stream's bytes (a file that is not
//! an archive must not leak its first line into the thread).
//!
//! Extraction always goes into a staging directory that nothing else uses, so a refused
//! archive leaves `dest` untouched (the caller removes the staging directory).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why an archive was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive refused: entry {entry:?} {reason}")]
    Hostile { entry: String, reason: String },
    #[error("archive refused: {0}")]
    Limit(String),
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

/// Bounds on what one archive may make the extractor do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the uncompressed tar stream (headers and padding included):
    /// `CORRAL_DEPLOY_MAX_BYTES`.
    pub max_bytes: u64,
    /// Headers in the archive: `CORRAL_DEPLOY_MAX_ENTRIES`.
    pub max_entries: u64,
    /// Size of one extended header (PAX, GNU long name or link):
    /// `CORRAL_DEPLOY_MAX_HEADER_BYTES`.
    pub max_header_bytes: u64,
    /// Uncompressed bytes per compressed byte, checked once past [`RATIO_FROM`]
    /// uncompressed bytes (a gzip bomb under `max_bytes`): `CORRAL_DEPLOY_MAX_RATIO`.
    pub max_ratio: u64,
}

/// The compression ratio is judged only past this many uncompressed bytes.
pub const RATIO_FROM: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 1_000_000,
            max_header_bytes: 1 << 20,
            max_ratio: 200,
        }
    }
}

/// The settings, their defaults' names, as documented.
pub const LIMIT_VARS: [&str; 4] = [
    "CORRAL_DEPLOY_MAX_BYTES",
    "CORRAL_DEPLOY_MAX_ENTRIES",
    "CORRAL_DEPLOY_MAX_HEADER_BYTES",
    "CORRAL_DEPLOY_MAX_RATIO",
];

impl Limits {
    /// The limits from `CORRAL_DEPLOY_MAX_*` (unset: the default). A value is a number of
    /// bytes (entries), optionally with a binary `K`, `M` or `G` suffix.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Limits, String> {
        let d = Limits::default();
        let get = |name: &str, default: u64| -> Result<u64, String> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => parse_count(&v).ok_or_else(|| {
                    format!("{name}: not a positive number (a count, or bytes with K, M or G)")
                }),
            }
        };
        Ok(Limits {
            max_bytes: get(LIMIT_VARS[0], d.max_bytes)?,
            max_entries: get(LIMIT_VARS[1], d.max_entries)?,
            max_header_bytes: get(LIMIT_VARS[2], d.max_header_bytes)?,
            max_ratio: get(LIMIT_VARS[3], d.max_ratio)?,
        })
    }

    /// [`Limits::from_lookup`] on the process environment.
    pub fn from_env() -> Result<Limits, String> {
        Limits::from_lookup(&|n| std::env::var(n).ok())
    }
}

/// `123`, `64K`, `512M`, `8G` (binary multiples); zero is refused.
fn parse_count(raw: &str) -> Option<u64> {
    let t = raw.trim();
    let (digits, mult) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&t[..i], 1 << 20),
        (i, 'g' | 'G') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
}

/// An entry name as errors show it: escaped, at most 120 characters.
fn shown(name: &str) -> String {
    crate::text::truncate(name, 120)
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
        entry: shown(entry),
        reason: reason.to_string(),
    }
}

/// What the archive has created so far under the root (paths relative to it). The
/// staging root starts empty, so this is the whole truth about it: links are judged
/// against it, not against their text alone.
#[derive(Debug, Default)]
pub struct Tree {
    dirs: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
    links: HashMap<PathBuf, PathBuf>,
}

/// Symlinks followed while resolving one target, at most (the kernel's own limit).
const MAX_HOPS: u32 = 40;

impl Tree {
    fn new() -> Tree {
        let mut t = Tree::default();
        t.dirs.insert(PathBuf::new());
        t
    }

    /// Records `rel`'s ancestors as directories (they are created before it).
    fn add_parents(&mut self, rel: &Path) {
        let mut p = rel.parent();
        while let Some(d) = p {
            if !self.dirs.insert(d.to_path_buf()) {
                break;
            }
            p = d.parent();
        }
    }

    /// Whether an ancestor of `rel` is a symlink.
    fn through_symlink(&self, rel: &Path) -> bool {
        rel.ancestors().skip(1).any(|a| self.links.contains_key(a))
    }

    /// Where `target`, a symlink's text seen from directory `base`, really leads inside
    /// the root, with the archive's earlier symlinks followed. `Err` says why it leaves
    /// the root or cannot be judged: going above the root, an absolute path, going up
    /// (`..`) through something that is not a directory the archive created (it could
    /// become a symlink later), or too many hops.
    pub fn resolve(&self, base: &Path, target: &Path) -> Result<PathBuf, &'static str> {
        let mut hops = 0;
        let mut stack: Vec<OsString> = base.iter().map(|c| c.to_os_string()).collect();
        self.walk(&mut stack, target, &mut hops)?;
        Ok(stack.iter().collect())
    }

    fn walk(
        &self,
        stack: &mut Vec<OsString>,
        target: &Path,
        hops: &mut u32,
    ) -> Result<(), &'static str> {
        for c in target.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => {
                    return Err("is an absolute symlink (pointing outside the archive)");
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if stack.is_empty() {
                        return Err("is a symlink leading outside the archive");
                    }
                    let here: PathBuf = stack.iter().collect();
                    if !self.dirs.contains(&here) {
                        return Err(
                            "is a symlink going up (`..`) through a path that is not a directory of the archive",
                        );
                    }
                    stack.pop();
                }
                Component::Normal(n) => {
                    stack.push(n.to_os_string());
                    let here: PathBuf = stack.iter().collect();
                    if let Some(next) = self.links.get(&here) {
                        *hops += 1;
                        if *hops > MAX_HOPS {
                            return Err("is a symlink chain that is too long");
                        }
                        stack.pop();
                        self.walk(stack, next, hops)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the readers saw, shared with the extracting loop (the tar and gzip readers only
/// pass an `io::Error` on, and their own texts may quote the stream).
#[derive(Debug, Default)]
struct Seen {
    /// A bound crossed (the refusal text).
    limit: OnceLock<String>,
    /// The source itself failed (a download error: corral's own text).
    source: OnceLock<String>,
    /// Bytes read from the source (compressed, when it is gzip).
    read: std::sync::atomic::AtomicU64,
}

/// Records errors of the source (the download) before gzip or tar wrap them.
struct SourceReader<R> {
    inner: R,
    seen: Arc<Seen>,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            let _ = self.seen.source.set(e.to_string());
        })?;
        self.seen
            .read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts the uncompressed tar stream and stops it past `max`.
struct Bounded<R> {
    inner: R,
    read: u64,
    max: u64,
    max_ratio: u64,
    seen: Arc<Seen>,
}

impl<R> Bounded<R> {
    fn new(inner: R, limits: &Limits, seen: &Arc<Seen>) -> Bounded<R> {
        Bounded {
            inner,
            read: 0,
            max: limits.max_bytes,
            max_ratio: limits.max_ratio,
            seen: seen.clone(),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > self.max {
            return Err(std::io::Error::other("limit"));
        }
        // Never hand out a byte past the bound: read at most one more than it allows.
        let room = (self.max - self.read + 1).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        if self.read > self.max {
            let _ = self.seen.limit.set(format!(
                "it unpacks to more than {} bytes (CORRAL_DEPLOY_MAX_BYTES)",
                self.max
            ));
            return Err(std::io::Error::other("limit"));
        }
        if self.read > RATIO_FROM {
            let source = self
                .seen
                .read
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(1);
            if self.read / source > self.max_ratio {
                let _ = self.seen.limit.set(format!(
                    "it unpacks to more than {} times its compressed size (CORRAL_DEPLOY_MAX_RATIO)",
                    self.max_ratio
                ));
                return Err(std::io::Error::other("limit"));
            }
        }
        Ok(n)
    }
}

impl Seen {
    /// The error for an `io::Error` out of the gzip or tar reader, in corral's words.
    fn error(&self, what: &str) -> ExtractError {
        if let Some(l) = self.limit.get() {
            return ExtractError::Limit(l.clone());
        }
        if let Some(s) = self.source.get() {
            return ExtractError::Read(s.clone());
        }
        ExtractError::Read(what.to_string())
    }
}

/// Whether a stream starts like gzip; the reader is not consumed.
fn is_gzip<R: BufRead>(r: &mut R) -> Result<bool, ExtractError> {
    let head = r
        .fill_buf()
        .map_err(|e| ExtractError::Read(e.to_string()))?;
    Ok(head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b)
}

/// [`unpack_with`] with the limits from the environment (`CORRAL_DEPLOY_MAX_*`).
pub fn unpack<R: Read>(reader: R, root: &Path) -> Result<(Stats, R), ExtractError> {
    let limits = Limits::from_env().map_err(ExtractError::Limit)?;
    unpack_with(reader, root, &limits)
}

/// Extracts a tar or tar.gz stream (told apart by content) into `root`, which must exist
/// and be empty, within `limits`. Returns the reader afterwards so the caller can drain
/// it (the checksum covers every byte); the rest of the uncompressed stream is read here,
/// under the same bound.
pub fn unpack_with<R: Read>(
    reader: R,
    root: &Path,
    limits: &Limits,
) -> Result<(Stats, R), ExtractError> {
    let seen = Arc::new(Seen::default());
    let source = SourceReader {
        inner: reader,
        seen: seen.clone(),
    };
    let mut buffered = BufReader::with_capacity(256 << 10, source);
    if is_gzip(&mut buffered)? {
        let mut tar = Bounded::new(
            flate2::bufread::MultiGzDecoder::new(buffered),
            limits,
            &seen,
        );
        let stats = unpack_tar(&mut tar, root, limits, &seen)?;
        // Read the rest of the gzip stream (tar padding) so the checksum sees everything.
        std::io::copy(&mut tar, &mut std::io::sink())
            .map_err(|_| seen.error("not a valid gzip stream"))?;
        Ok((stats, tar.inner.into_inner().into_inner().inner))
    } else {
        let mut tar = Bounded::new(buffered, limits, &seen);
        let stats = unpack_tar(&mut tar, root, limits, &seen)?;
        std::io::copy(&mut tar, &mut std::io::sink())
            .map_err(|_| seen.error("cannot read the end of the archive"))?;
        Ok((stats, tar.inner.into_inner().inner))
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

fn unpack_tar<R: Read>(
    reader: R,
    root: &Path,
    limits: &Limits,
    seen: &Seen,
) -> Result<Stats, ExtractError> {
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
        let result = unpack_entries(reader, root, limits, seen, &writers).and_then(|stats| {
            writers.barrier()?;
            Ok(stats)
        });
        writers.close();
        result
    })
}

/// Names carried by extended headers for the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    /// PAX `size`, which must agree with the header's (parsers that disagree on sizes
    /// see different archives).
    size: Option<u64>,
}

/// Reads an extended header's data, refused past `CORRAL_DEPLOY_MAX_HEADER_BYTES` before
/// anything is read.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    size: u64,
    limits: &Limits,
    seen: &Seen,
) -> Result<Vec<u8>, ExtractError> {
    if size > limits.max_header_bytes {
        return Err(ExtractError::Limit(format!(
            "an extended header (PAX or GNU long name) of {size} bytes is larger than {} bytes (CORRAL_DEPLOY_MAX_HEADER_BYTES)",
            limits.max_header_bytes
        )));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut data)
        .map_err(|_| seen.error("the archive ends inside an extended header"))?;
    Ok(data)
}

/// The records of a PAX extended header that matter here: `path`, `linkpath`, `size`.
fn apply_pax(data: &[u8], pending: &mut Pending) -> Result<(), ExtractError> {
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let record = line
            .iter()
            .position(|b| *b == b' ')
            .map(|i| &line[i + 1..])
            .and_then(|kv| kv.iter().position(|b| *b == b'=').map(|e| kv.split_at(e)));
        let Some((key, value)) = record else {
            return Err(ExtractError::Read("a malformed PAX extended header".into()));
        };
        let value = &value[1..];
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"size" => {
                pending.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| ExtractError::Read("a malformed PAX size".into()))?,
                )
            }
            // GNU's PAX sparse formats describe a file bigger than its data.
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(ExtractError::Limit(
                    "sparse files are not extracted (GNU.sparse in a PAX header)".into(),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn strip_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn bytes_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

/// The extracting loop, over the archive's raw headers: extended headers are read here
/// (bounded) rather than by the tar crate (which reads them whole into memory). Long
/// because every entry kind is judged here, in one place, in the archive's order.
fn unpack_entries<R: Read>(
    reader: R,
    root: &Path,
    limits: &Limits,
    seen: &Seen,
    writers: &Writers,
) -> Result<Stats, ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = Stats::default();
    let mut headers = 0u64;
    let mut tree = Tree::new();
    let mut pending = Pending::default();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let unreadable = "not a tar archive, or a damaged one";
    let entries = archive
        .entries()
        .map_err(|_| seen.error(unreadable))?
        .raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|_| seen.error(unreadable))?;
        headers += 1;
        if headers > limits.max_entries {
            return Err(ExtractError::Limit(format!(
                "it has more than {} entries (CORRAL_DEPLOY_MAX_ENTRIES)",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        let size = entry
            .header()
            .entry_size()
            .map_err(|_| ExtractError::Read(format!("{unreadable} (a bad size field)")))?;
        use tar::EntryType as T;
        match kind {
            T::XHeader => {
                let data = read_extension(&mut entry, size, limits, seen)?;
                apply_pax(&data, &mut pending)?;
                continue;
            }
            T::XGlobalHeader => {
                read_extension(&mut entry, size, limits, seen)?;
                continue;
            }
            T::GNULongName => {
                pending.path = Some(strip_nuls(read_extension(&mut entry, size, limits, seen)?));
                continue;
            }
            T::GNULongLink => {
                pending.link = Some(strip_nuls(read_extension(&mut entry, size, limits, seen)?));
                continue;
            }
            _ => {}
        }
        let here = std::mem::take(&mut pending);
        let raw_path = here
            .path
            .map(|p| bytes_path(&p))
            .unwrap_or_else(|| bytes_path(&entry.header().path_bytes()));
        let name = raw_path.to_string_lossy().into_owned();
        if here.size.is_some_and(|s| s != size) {
            return Err(hostile(
                &name,
                "has a PAX size that disagrees with its header",
            ));
        }
        let link = here
            .link
            .map(|l| bytes_path(&l))
            .or_else(|| entry.header().link_name_bytes().map(|l| bytes_path(&l)));
        let rel = safe_relative(&name, &raw_path)?;
        match kind {
            T::Char | T::Block | T::Fifo => {
                return Err(hostile(&name, "is a device or FIFO file"));
            }
            T::GNUSparse => {
                return Err(hostile(&name, "is a sparse file (not extracted)"));
            }
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link => {}
            other => {
                return Err(hostile(
                    &name,
                    &format!("has an unsupported type {other:?}"),
                ));
            }
        }
        if rel.as_os_str().is_empty() {
            // The `./` entry: the caller sets the mode of the root (dest_mode).
            if kind == T::Directory {
                continue;
            }
            return Err(hostile(&name, "names the archive's root"));
        }
        if tree.through_symlink(&rel) {
            return Err(hostile(&name, "would be written through a symlink"));
        }
        if tree.links.contains_key(&rel) {
            return Err(hostile(&name, "would replace an earlier symlink"));
        }
        if kind != T::Directory && tree.dirs.contains(&rel) {
            return Err(hostile(&name, "would replace a directory"));
        }
        tree.add_parents(&rel);
        let dst = root.join(&rel);
        let write_err = |e: std::io::Error| ExtractError::Write {
            path: shown(&name),
            reason: e.to_string(),
        };
        match kind {
            T::Directory => {
                if writers.is_pending(&dst) {
                    writers.barrier()?;
                }
                std::fs::create_dir_all(&dst).map_err(write_err)?;
                tree.dirs.insert(rel);
                let mode = entry.header().mode().unwrap_or(0o755) & 0o777;
                dir_modes.push((dst, mode));
                stats.entries += 1;
                continue;
            }
            T::Symlink => {
                let target = link
                    .filter(|t| !t.as_os_str().is_empty())
                    .ok_or_else(|| hostile(&name, "is a symlink without a target"))?;
                let base = rel.parent().unwrap_or(Path::new(""));
                if let Err(why) = tree.resolve(base, &target) {
                    return Err(hostile(&name, why));
                }
                writers.barrier()?;
                prepare(&dst, &mut tree, &rel, &name)?;
                std::os::unix::fs::symlink(&target, &dst).map_err(write_err)?;
                tree.links.insert(rel, target);
                stats.entries += 1;
                continue;
            }
            T::Link => {
                let target = link
                    .filter(|t| !t.as_os_str().is_empty())
                    .ok_or_else(|| hostile(&name, "is a hard link without a target"))?;
                let t = safe_relative(&name, &target)
                    .map_err(|_| hostile(&name, "is a hard link to outside the archive"))?;
                if !tree.files.contains(&t) {
                    return Err(hostile(
                        &name,
                        "is a hard link to something that is not a regular file extracted earlier from this archive",
                    ));
                }
                // Its source may still be queued for writing.
                writers.barrier()?;
                prepare(&dst, &mut tree, &rel, &name)?;
                std::fs::hard_link(root.join(&t), &dst).map_err(write_err)?;
                tree.files.insert(rel);
                stats.entries += 1;
                continue;
            }
            _ => {}
        }
        // A regular file.
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mtime = entry.header().mtime().unwrap_or(0);
        if size > SMALL_FILE || writers.is_pending(&dst) {
            writers.barrier()?;
        }
        prepare(&dst, &mut tree, &rel, &name)?;
        stats.bytes += size;
        let mut data = Vec::with_capacity(size.min(SMALL_FILE) as usize);
        if size <= SMALL_FILE {
            entry
                .read_to_end(&mut data)
                .map_err(|_| seen.error("the archive ends inside a file"))?;
            writers.submit(FileJob {
                name: shown(&name),
                dst,
                data,
                mode,
                mtime,
            })?;
        } else {
            write_large(&mut entry, &dst, mode, mtime, seen).map_err(|e| match e {
                Large::Read(e) => e,
                Large::Write(e) => write_err(e),
            })?;
        }
        tree.files.insert(rel);
        stats.entries += 1;
    }
    if pending.path.is_some() || pending.link.is_some() || pending.size.is_some() {
        return Err(ExtractError::Read(
            "the archive ends with an extended header and no entry".into(),
        ));
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

/// Makes room for an entry at `dst`: its parent directories, and an earlier entry of the
/// same name (a file; the caller refused symlinks and directories) removed, so a later
/// entry replaces an earlier one and never writes through it.
fn prepare(dst: &Path, tree: &mut Tree, rel: &Path, name: &str) -> Result<(), ExtractError> {
    let err = |e: std::io::Error| ExtractError::Write {
        path: shown(name),
        reason: e.to_string(),
    };
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    if tree.files.remove(rel) {
        std::fs::remove_file(dst).map_err(err)?;
    }
    Ok(())
}

enum Large {
    Read(ExtractError),
    Write(std::io::Error),
}

/// A file too big to queue: written here, streamed, never through a link.
fn write_large<R: Read>(
    entry: &mut R,
    dst: &Path,
    mode: u32,
    mtime: u64,
    seen: &Seen,
) -> Result<(), Large> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dst)
        .map_err(Large::Write)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Large::Read(seen.error("the archive ends inside a file"))),
        };
        f.write_all(&buf[..n]).map_err(Large::Write)?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(Large::Write)?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    f.set_modified(t).map_err(Large::Write)?;
    Ok(())
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
    fn a_gzip_bomb_under_the_byte_bound_is_stopped_by_the_ratio() {
        let root = tmp("ratio");
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut e, b).unwrap();
            e.finish().unwrap()
        };
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(200 << 20);
        h.set_cksum();
        let mut bomb = gz(h.as_bytes());
        bomb.extend(gz(&vec![0u8; 1 << 20]).repeat(200));
        let e = unpack_with(&bomb[..], &root, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("CORRAL_DEPLOY_MAX_RATIO"), "{e}");
        let written = std::fs::metadata(root.join("zeros")).map_or(0, |m| m.len());
        assert!(written <= RATIO_FROM + (1 << 20), "{written}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn limits_from_the_environment() {
        let env = |n: &str| match n {
            "CORRAL_DEPLOY_MAX_BYTES" => Some("512M".to_string()),
            "CORRAL_DEPLOY_MAX_RATIO" => Some("50".to_string()),
            _ => None,
        };
        let l = Limits::from_lookup(&env).unwrap();
        assert_eq!(
            (l.max_bytes, l.max_ratio, l.max_entries),
            (512 << 20, 50, 1_000_000)
        );
        for bad in ["0", "-1", "12X", "lots"] {
            let env = |n: &str| (n == "CORRAL_DEPLOY_MAX_ENTRIES").then(|| bad.to_string());
            let e = Limits::from_lookup(&env).unwrap_err();
            assert!(e.starts_with("CORRAL_DEPLOY_MAX_ENTRIES: "), "{bad}: {e}");
        }
    }

    #[test]
    fn garbage_is_a_read_error() {
        let root = tmp("garbage");
        let e = unpack(&[0x1f, 0x8b, 1, 2, 3][..], &root).unwrap_err();
        assert!(matches!(e, ExtractError::Read(_)), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
