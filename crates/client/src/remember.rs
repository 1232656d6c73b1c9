//! Remembering the last server that worked, so that a device can try it first next time
//! instead of waiting for a discovery round.

use std::io;
use std::path::Path;

/// Writes `url` to `path` (atomically: a temporary file renamed over it).
pub fn save(path: &Path, url: &str) -> io::Result<()> {
    if load(path).as_deref() == Some(url) {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{url}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The URL remembered in `path`, if the file exists and holds one.
pub fn load(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let url = text.lines().next()?.trim();
    (url.starts_with("ws://") || url.starts_with("wss://")).then(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_junk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/last-server");
        assert_eq!(load(&path), None);
        save(&path, "ws://10.0.0.5:8080/ws").unwrap();
        assert_eq!(load(&path).as_deref(), Some("ws://10.0.0.5:8080/ws"));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(load(&path), None);
    }
}
