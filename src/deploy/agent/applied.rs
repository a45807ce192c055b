//! The applied-events state file: Consul event ids already applied on this host, kept
//! across restarts so a watch that fires the same event again does not redeploy.

use std::path::PathBuf;

/// Consul event ids applied on this host, kept across restarts.
pub struct AppliedEvents {
    path: PathBuf,
}

/// How many ids are remembered.
const KEEP_IDS: usize = 1000;

impl AppliedEvents {
    pub(crate) fn new(path: PathBuf) -> AppliedEvents {
        AppliedEvents { path }
    }

    fn ids(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .map(|s| {
                s.lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids().iter().any(|i| i == id)
    }

    /// Records an id (written to a temp file and renamed, so a crash never leaves half a
    /// file).
    pub(crate) fn record(&self, id: &str) -> Result<(), String> {
        let mut ids = self.ids();
        ids.retain(|i| i != id);
        ids.push(id.to_string());
        let start = ids.len().saturating_sub(KEEP_IDS);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, ids[start..].join("\n") + "\n")
            .map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("rename {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_events_survive_a_new_instance() {
        let p = std::env::temp_dir().join(format!("corral-applied-{}/state", std::process::id()));
        let a = AppliedEvents::new(p.clone());
        assert!(!a.contains("e1"));
        a.record("e1").unwrap();
        a.record("e2").unwrap();
        let b = AppliedEvents::new(p.clone());
        assert!(b.contains("e1") && b.contains("e2") && !b.contains("e3"));
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
