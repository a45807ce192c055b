//! Which `dest` a deploy may replace. `rsync --delete`, `mv` and `release` make `dest` the
//! archive's tree, so a `dest` of `/`, `/usr` or the directory the agent works in would
//! wipe the host. Refused: a system directory ([`SYSTEM_DIRS`]), a path with `..`, and
//! any `dest` that is (or contains) one of the `protected` directories (the agent's
//! working directory and the directory of its state file). An existing `dest` is judged
//! by its real path too, so a symlink to `/` does not pass.

use std::path::{Component, Path, PathBuf};

/// Directories no deploy may be: the file system's root and its standard top levels.
pub(crate) const SYSTEM_DIRS: [&str; 33] = [
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/tmp",
];

/// Checks `dest` (see the module); the error names the rule.
pub(crate) fn check(dest: &Path, protected: &[PathBuf]) -> Result<(), String> {
    let shown = dest.display();
    if !dest.is_absolute() {
        return Err(format!("dest {shown} must be an absolute path"));
    }
    if dest.components().any(|c| c == Component::ParentDir) {
        return Err(format!("dest {shown} must not contain `..`"));
    }
    let lexical: PathBuf = dest.components().collect();
    judge(&lexical, dest, protected)?;
    // An existing dest (or a symlink) by its real path.
    if let Ok(real) = std::fs::canonicalize(dest)
        && real != lexical
    {
        judge(&real, dest, protected)?;
    }
    Ok(())
}

fn judge(path: &Path, dest: &Path, protected: &[PathBuf]) -> Result<(), String> {
    let shown = dest.display();
    if SYSTEM_DIRS.iter().any(|s| path == Path::new(s)) {
        return Err(format!(
            "dest {shown} is a system directory ({}); deploy into a directory of its own, such as /srv/<app>",
            path.display()
        ));
    }
    for p in protected {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.components().collect());
        if p.starts_with(path) {
            return Err(format!(
                "dest {shown} contains the agent's own directory {} (its working directory or state file); a deploy would replace it",
                p.display()
            ));
        }
    }
    Ok(())
}

/// The directories a deploy on this host must leave alone: the working directory and
/// the state file's directory.
pub(crate) fn protected(state_file: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd);
    }
    if let Some(dir) = state_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        out.push(dir.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_ancestors_and_dot_dots_are_refused() {
        let work = vec![PathBuf::from("/srv/agent/work")];
        for bad in [
            "/",
            "//",
            "/usr",
            "/usr/",
            "/etc/.",
            "/var/lib",
            "/srv",
            "/srv/agent",
            "/srv/agent/work",
            "/srv/app/../..",
            "relative",
        ] {
            assert!(check(Path::new(bad), &work).is_err(), "{bad}");
        }
        for ok in [
            "/srv/app",
            "/var/www/app",
            "/srv/agent/work/out",
            "/opt/app/current",
        ] {
            assert_eq!(check(Path::new(ok), &work), Ok(()), "{ok}");
        }
        assert!(
            check(Path::new("/"), &[])
                .unwrap_err()
                .contains("system directory")
        );
        assert!(
            check(Path::new("/srv/agent"), &work)
                .unwrap_err()
                .contains("agent's own directory")
        );
    }
}
