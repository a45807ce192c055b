//! Hostile archives against `corral agent`, from outside: link chains that try to leave
//! the staging root (each strategy, judged by inodes and real paths), bombs that try to
//! exhaust the host before the checksum is known (peak RSS of the child process and the
//! staging directory's size are measured, never inside this test binary), and files that
//! are not archives (their bytes must not reach the error).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::deploy::Sandbox;

/// A raw tar header block (+ data, padded): names and links written as bytes.
fn entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let b = h.as_old_mut();
        b.name[..name.len()].copy_from_slice(name.as_bytes());
        b.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A header declaring `size` bytes of data that follow elsewhere.
fn header_only(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

/// `count` MiB of `byte`, as concatenated gzip members (a gzip bomb, built in
/// milliseconds: one MiB compressed once, repeated).
fn gzip_mib(byte: u8, count: usize) -> Vec<u8> {
    let one = gzip(&vec![byte; 1 << 20]);
    one.repeat(count)
}

/// What a child `corral agent` run cost: exit code, stderr, peak RSS (its own, from
/// wait4), the largest the staging directories grew (sampled), wall time.
struct Measured {
    code: i32,
    stderr: String,
    max_rss_kib: i64,
    peak_staging: u64,
    elapsed: Duration,
}

/// Bytes under `dir` (allocated blocks and apparent sizes, whichever is larger), not
/// following links.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.is_dir() {
            total += tree_bytes(&e.path());
        } else {
            total += m.len().max(m.blocks() * 512);
        }
    }
    total
}

/// Runs `corral agent` with `stdin` in `sb`, `TMPDIR` = `sb/tmp` (rsync's staging), while
/// sampling the size of `watch` every few milliseconds; killed after `limit`.
fn measured_agent(
    sb: &Sandbox,
    stdin: &str,
    env: &[(&str, &str)],
    watch: &Path,
    limit: Duration,
) -> Measured {
    use std::io::Write;
    let tmp = sb.dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let err_path = sb.dir.join("agent.stderr");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.arg("agent")
        .current_dir(&sb.dir)
        .env_remove("CONSUL_INDEX")
        .env_remove("SERF_USER_EVENT")
        .env_remove("CORRAL_REPORT_URL")
        .env("CORRAL_AGENT_STATE", sb.dir.join("agent-state"))
        .env("TMPDIR", &tmp)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("corral binary");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut peak = 0;
    let (code, rss) = loop {
        let mut status = 0;
        // SAFETY: plain libc call on our own child; rusage is a plain struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -libc::WTERMSIG(status)
            };
            break (code, usage.ru_maxrss);
        }
        peak = peak.max(tree_bytes(watch));
        if started.elapsed() > limit {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The child is reaped by wait4; the Child handle must not wait again.
    std::mem::forget(child);
    Measured {
        code,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        max_rss_kib: rss,
        peak_staging: peak,
        elapsed: started.elapsed(),
    }
}

fn manifest(sb: &Sandbox, archive: &[u8], strategy: &str) -> String {
    let path = sb.dir.join("archive.bin");
    std::fs::write(&path, archive).unwrap();
    let dest = if strategy == "mv" {
        sb.dir.join("newdest")
    } else {
        sb.dest.clone()
    };
    sb.write_manifest(&format!(
        "src: file://{}\nchecksum: {}\ndest: {}\nsync_strategy: {strategy}\ncommands:\n  failure:\n    - cat > {}/failure.log\n",
        path.display(),
        sha256_hex(archive),
        dest.display(),
        sb.dir.display()
    ))
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Every path under `dir`, not following links.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().symlink_metadata().is_ok_and(|m| m.is_dir()) {
            walk(&e.path(), out);
        }
    }
}

#[test]
fn link_chains_never_reach_outside_for_any_strategy() {
    use tar::EntryType as T;
    for strategy in ["mv", "release", "rsync"] {
        let sb = Sandbox::new(&format!("linkchain-{strategy}"));
        // Where `esc` leads if links are judged by their text alone: the parent of the
        // staging directory.
        let staging_parent = match strategy {
            "rsync" => sb.dir.join("tmp"),
            "mv" => sb.dir.clone(),
            _ => sb.dest.join("releases"),
        };
        std::fs::create_dir_all(&staging_parent).unwrap();
        let secret = staging_parent.join("secret");
        std::fs::write(&secret, "TOP SECRET").unwrap();
        let secret_ino = std::fs::metadata(&secret).unwrap().ino();
        let mut tar = entry("sub/", T::Directory, "", b"");
        tar.extend(entry("sub/up", T::Symlink, "..", b""));
        tar.extend(entry("esc", T::Symlink, "sub/up/..", b""));
        tar.extend(entry("hl", T::Link, "esc/secret", b""));
        tar.extend([0u8; 1024]);
        let url = manifest(&sb, &tar, strategy);
        let r = measured_agent(&sb, &url, &[], &sb.dir.join("tmp"), Duration::from_secs(30));
        let dest = if strategy == "mv" {
            sb.dir.join("newdest")
        } else {
            sb.dest.clone()
        };
        let mut paths = Vec::new();
        walk(&dest, &mut paths);
        let real_dest = std::fs::canonicalize(&dest).unwrap_or(dest.clone());
        for p in &paths {
            let m = p.symlink_metadata().unwrap();
            if p != &secret {
                assert_ne!(
                    m.ino(),
                    secret_ino,
                    "{strategy}: {} is a hard link to the secret",
                    p.display()
                );
            }
            if m.is_file() && p != &secret {
                assert_ne!(
                    std::fs::read(p).unwrap(),
                    b"TOP SECRET",
                    "{strategy}: {} is a copy of the secret",
                    p.display()
                );
            }
            if m.file_type().is_symlink()
                && let Ok(real) = std::fs::canonicalize(p)
            {
                assert!(
                    real.starts_with(&real_dest),
                    "{strategy}: {} leads to {}",
                    p.display(),
                    real.display()
                );
            }
        }
        assert_eq!(r.code, 1, "{strategy}: {}", r.stderr);
        assert!(
            r.stderr.contains("archive refused"),
            "{strategy}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("\"esc\""), "{strategy}: {}", r.stderr);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOP SECRET");
    }
}

/// Peak RSS of a child allowed for a refused bomb (an idle agent is ~15 MiB).
const RSS_BOUND_KIB: i64 = 160 << 10;

#[test]
fn gzip_bomb_with_a_wrong_checksum_stops_at_the_byte_bound() {
    let sb = Sandbox::new("gzbomb");
    // 1 GiB of zeros in one entry, about 1 MB compressed.
    let mut bomb = gzip(&header_only("zeros", tar::EntryType::Regular, 1 << 30));
    bomb.extend(gzip_mib(0, 1024));
    assert!(bomb.len() < 2 << 20);
    let url = sb.write_manifest(&format!(
        "src: file://{}\nchecksum: {}\ndest: {}\n",
        write(&sb, "bomb.tgz", &bomb).display(),
        "0".repeat(64),
        sb.dest.display()
    ));
    let r = measured_agent(
        &sb,
        &url,
        &[("CORRAL_DEPLOY_MAX_BYTES", "32M")],
        &sb.dir.join("tmp"),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("CORRAL_DEPLOY_MAX_BYTES"), "{}", r.stderr);
    assert!(
        r.peak_staging <= 33 << 20,
        "staging grew to {} bytes",
        r.peak_staging
    );
    assert!(
        r.max_rss_kib < RSS_BOUND_KIB,
        "peak RSS {} KiB",
        r.max_rss_kib
    );
    assert!(r.elapsed < Duration::from_secs(20), "{:?}", r.elapsed);
}

fn write(sb: &Sandbox, name: &str, data: &[u8]) -> PathBuf {
    let p = sb.dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn huge_pax_header_with_a_wrong_checksum_is_refused_before_it_is_read() {
    let sb = Sandbox::new("paxbomb");
    // A PAX header declaring 1 GiB of records, the records there (compressed to ~1 MB).
    let mut bomb = gzip(&header_only("pax", tar::EntryType::XHeader, 1 << 30));
    bomb.extend(gzip_mib(b'a', 1024));
    let url = sb.write_manifest(&format!(
        "src: file://{}\nchecksum: {}\ndest: {}\n",
        write(&sb, "pax.tgz", &bomb).display(),
        "0".repeat(64),
        sb.dest.display()
    ));
    let r = measured_agent(&sb, &url, &[], &sb.dir.join("tmp"), Duration::from_secs(60));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("CORRAL_DEPLOY_MAX_HEADER_BYTES"),
        "{}",
        r.stderr
    );
    assert!(
        r.max_rss_kib < RSS_BOUND_KIB,
        "peak RSS {} KiB",
        r.max_rss_kib
    );
    assert!(r.elapsed < Duration::from_secs(20), "{:?}", r.elapsed);
}

/// A GNU sparse header declaring a 10 GiB file with one byte of data at its end.
fn sparse_bomb() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..6].copy_from_slice(b"sparse");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    // GNU's base-256 numbers: 10 GiB needs more than the 11 octal digits a field holds.
    let octal = |field: &mut [u8], v: u64| {
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
    };
    {
        let g = h.as_gnu_mut().unwrap();
        octal(&mut g.realsize, 10 << 30);
        octal(&mut g.sparse[0].offset, (10 << 30) - 512);
        octal(&mut g.sparse[0].numbytes, 512);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend([b'x'; 512]);
    out.extend([0u8; 1024]);
    out
}

#[test]
fn sparse_entry_with_a_wrong_checksum_is_refused() {
    for strategy in ["rsync", "mv"] {
        let sb = Sandbox::new(&format!("sparse-{strategy}"));
        let bomb = sparse_bomb();
        let dest = if strategy == "mv" {
            sb.dir.join("newdest")
        } else {
            sb.dest.clone()
        };
        let url = sb.write_manifest(&format!(
            "src: file://{}\nchecksum: {}\ndest: {}\nsync_strategy: {strategy}\n",
            write(&sb, "sparse.tar", &bomb).display(),
            "0".repeat(64),
            dest.display()
        ));
        let watch = if strategy == "mv" {
            sb.dir.clone()
        } else {
            sb.dir.join("tmp")
        };
        let r = measured_agent(&sb, &url, &[], &watch, Duration::from_secs(30));
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains("sparse"), "{strategy}: {}", r.stderr);
        assert!(
            r.peak_staging < 1 << 20,
            "{strategy}: staging grew to {} bytes",
            r.peak_staging
        );
        assert!(
            r.max_rss_kib < RSS_BOUND_KIB,
            "peak RSS {} KiB",
            r.max_rss_kib
        );
    }
}

#[test]
fn a_file_that_is_not_an_archive_is_not_quoted() {
    let sb = Sandbox::new("notar");
    // Like /etc/shadow: text whose first line lands in a tar header's name field.
    let secret =
        "root:$6$SECRETHASHxyzSECRETHASHxyz:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
    let mut text = secret.repeat(20).into_bytes();
    text.truncate(1500);
    let url = sb.write_manifest(&format!(
        "src: file://{}\nchecksum: {}\ndest: {}\ncommands:\n  failure:\n    - cat > {}/failure.log\n",
        write(&sb, "shadow", &text).display(),
        "0".repeat(64),
        sb.dest.display(),
        sb.dir.display()
    ));
    let r = measured_agent(&sb, &url, &[], &sb.dir.join("tmp"), Duration::from_secs(30));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("archive unreadable"), "{}", r.stderr);
    let log = std::fs::read_to_string(sb.dir.join("failure.log")).unwrap();
    for seen in [&r.stderr, &log] {
        assert!(
            !seen.contains("SECRETHASH") && !seen.contains("root:"),
            "{seen}"
        );
    }
}

/// 200 KB of flow nesting: `[[[[…]]]]` under `commands.pre`.
pub fn nesting_bomb() -> String {
    format!(
        "commands:\n  pre: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    )
}

/// A 124 KB manifest whose aliases expand to about 1 GB: a 60 KB string, aliased 16 000
/// times in one list.
pub fn alias_bomb() -> String {
    format!(
        "x: &x \"{}\"\nchecksum: [{}]\n",
        "A".repeat(60_000),
        vec!["*x"; 16_000].join(",")
    )
}

#[test]
fn manifest_bombs_are_refused_fast_and_small() {
    for (what, text, needle) in [
        ("nesting", nesting_bomb(), "nesting depth"),
        ("aliases", alias_bomb(), "alias"),
    ] {
        assert!(text.len() < 210_000, "{what}: {}", text.len());
        let sb = Sandbox::new(&format!("yamlbomb-{what}"));
        let url = sb.write_manifest(&text);
        let r = measured_agent(&sb, &url, &[], &sb.dir.join("tmp"), Duration::from_secs(20));
        assert_eq!(r.code, 1, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{what}: {}", r.stderr);
        assert!(
            r.elapsed < Duration::from_secs(5),
            "{what}: {:?}",
            r.elapsed
        );
        assert!(
            r.max_rss_kib < RSS_BOUND_KIB,
            "{what}: peak RSS {} KiB",
            r.max_rss_kib
        );
        // The refusal names the limit; it never echoes the manifest.
        assert!(
            r.stderr.len() < 20_000,
            "{what}: {} bytes of stderr",
            r.stderr.len()
        );
    }
}
