//! Files and directories that hold secrets (signing keys, CA keys, API-key hashes,
//! recreate tokens, certificates' keys) or addresses (the audit log): readable by
//! their owner only, whatever the process's umask. The server's data directory, the
//! agent's state directory and every such file go through here.
//!
//! On Unix a directory this module creates gets mode `0700` and a file `0600`; a
//! file that already exists is narrowed to `0600` when opened (an older release may
//! have made it wider). A directory that already exists is left as it is: it may be
//! one the operator chose and shares, such as `/srv`. Windows has no mode bits: files
//! inherit their directory's ACL, which under `%LOCALAPPDATA%` is the user's own
//! (docs/platforms.md).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Creates `dir` and any missing parents, each new one owner-only (`0700`).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Some(parent) = dir.parent() {
            create_dir(parent)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Made by another process meanwhile: not ours to narrow.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        // The umask can only narrow 0700; set it exactly anyway (a umask of 0777
        // would leave the owner locked out).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Opens `path` with `options`, creating it owner-only (`0600`) if `options` create,
/// and narrowing an existing file to `0600`. Its directory is made with
/// [`create_dir`] when missing.
pub fn open(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Writes `contents` to `path` owner-only, replacing what was there: into a new file
/// beside it (never a link someone left there, never a file someone else has open),
/// then renamed over it.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let written = write_new(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `contents` to a new file at `path` owner-only; fails if `path` exists.
pub fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    open(path, &mut options)?.write_all(contents)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_owner_only_and_old_files_are_narrowed() {
        let root = std::env::temp_dir().join(format!("netbore-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nested = root.join("a/b");
        write(&nested.join("secret"), b"s").unwrap();
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&nested.join("secret")), 0o600);
        assert_eq!(mode(&root), 0o755, "an existing directory is left alone");

        let old = root.join("old");
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&old, b"y").unwrap();
        assert_eq!(mode(&old), 0o600);
        assert!(write_new(&old, b"z").is_err(), "write_new never replaces");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
