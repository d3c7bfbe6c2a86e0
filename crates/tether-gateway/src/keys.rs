//! The admin API's keys. The admin key comes from the config (`admin.key`,
//! `admin.key_env`) or from a file: `admin.key_file`, or by default one in
//! the state directory, made at the first start (64 random hex digits, mode
//! 0600) and read at every later one — the key survives restarts and never
//! appears in a log. `/metrics` is open unless a read-only metrics key is
//! configured (`admin.metrics_key_env`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// Where the admin key comes from, once the config is resolved.
#[derive(Clone)]
pub(crate) enum AdminKey {
    /// The admin API is off.
    Off,
    /// Given by the config (inline or through the environment).
    Given(String),
    /// Kept in this file, made at start when missing.
    File(PathBuf),
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminKey::Off => f.write_str("Off"),
            AdminKey::Given(_) => f.write_str("Given(…)"),
            AdminKey::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// Shortest admin or metrics key accepted, in bytes.
pub(crate) const MIN_KEY_LEN: usize = 16;

/// The file a generated admin key is kept in when the config names none:
/// `admin.key` under `$STATE_DIRECTORY` (systemd's `StateDirectory=`),
/// `$XDG_STATE_HOME/tether` or `~/.local/state/tether`.
pub fn default_key_file() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("STATE_DIRECTORY")
        // systemd passes several directories separated by ':'; the first is ours.
        .and_then(|d| d.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("tether")))
        .or_else(|| var("HOME").map(|h| h.join(".local/state/tether")))?;
    Some(dir.join("admin.key"))
}

/// Reads the admin key kept in `path`; refuses a file others can read or a
/// key that is too short, naming the fix.
pub(crate) fn read_key_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("admin.key_file: cannot read {}; fix its permissions or remove it", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "admin.key_file: {} can be read by other users (mode {mode:04o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    let key = text.trim().to_owned();
    if key.len() < MIN_KEY_LEN || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "admin.key_file: {} does not hold a key (one line of at least {MIN_KEY_LEN} characters, no spaces); \
             remove it to have a new one made at start",
            path.display()
        );
    }
    Ok(key)
}

/// The key in `path`, made first when the file does not exist (random,
/// mode 0600, in a directory made with mode 0700). True when made now.
/// Nodes starting together on one machine agree: the file is created
/// exclusively, and the losers read the winner's key.
pub(crate) fn load_or_make(path: &Path) -> Result<(String, bool)> {
    if path.exists() {
        return Ok((read_key_file(path)?, false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).with_context(|| {
            format!("admin.key_file: cannot create {}; set admin.key_file to a writable place", dir.display())
        })?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let key = crate::random_key();
    match o.open(path) {
        Ok(mut f) => {
            f.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("admin.key_file: cannot write {}", path.display()))?;
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read_key_file(path)?, false)),
        Err(e) => Err(e).with_context(|| {
            format!("admin.key_file: cannot create {}; set admin.key_file to a writable place", path.display())
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tether-keys-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> String {
        hex::encode(&tether_runtime::client::entropy()[..4])
    }

    #[test]
    fn a_key_file_is_made_once_private_and_read_back() {
        let d = temp();
        let p = d.join("state/tether/admin.key");
        let (k, made) = load_or_make(&p).unwrap();
        assert!(made);
        assert_eq!(k.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(load_or_make(&p).unwrap(), (k, false));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_or_without_a_key_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = temp();
        let p = d.join("admin.key");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", load_or_make(&p).unwrap_err());
        assert!(e.contains("can be read by other users (mode 0644)") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_make(&p).unwrap().0, "0123456789abcdef0123");
        std::fs::write(&p, "short\n").unwrap();
        let e = format!("{:#}", load_or_make(&p).unwrap_err());
        assert!(e.contains("does not hold a key") && e.contains("remove it"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }
}
