//! Files a management client names, read only from a directory the
//! operator configured (`jwks_dir` for JWKS files, `tls.cert_dir` for
//! custom domains' certificates).
//!
//! The name is relative, made of plain components (no `..`, no absolute
//! path, no NUL, at most 1024 bytes), and after canonicalisation (symlinks
//! resolved) must still be inside the directory; only a regular file is
//! read, and at most `max_bytes` of it. Errors name the setting, never the
//! directory or a path outside it, and never quote the file.

use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncReadExt;

/// A directory files are read from, and the names its settings have in
/// error messages.
#[derive(Clone, Copy, Debug)]
pub struct Confined<'a> {
    /// The configured directory (not empty: callers refuse that first).
    pub dir: &'a Path,
    /// The setting naming `dir`, e.g. `jwks_dir`.
    pub setting: &'a str,
    /// Largest file read.
    pub max_bytes: usize,
    /// The setting naming `max_bytes`, e.g. `jwks_max_bytes`.
    pub max_setting: &'a str,
}

impl Confined<'_> {
    /// `name` as a relative path of plain components, or the reason.
    fn relative<'n>(&self, name: &'n str) -> Result<&'n Path, String> {
        let rel = Path::new(name);
        let plain = !name.is_empty()
            && name.len() <= 1024
            && !name.contains('\0')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(format!(
                "must be a file name relative to {}, without \"..\"",
                self.setting
            ));
        }
        Ok(rel)
    }

    fn unusable(&self, e: &std::io::Error) -> String {
        tracing::warn!(error = %e, setting = self.setting, "directory cannot be resolved");
        format!("{} is not usable on this gateway", self.setting)
    }

    fn outside(&self, full: &Path, base: &Path) -> Result<(), String> {
        if !full.starts_with(base) || full == base {
            return Err(format!(
                "must stay inside {} (no symlinks out of it)",
                self.setting
            ));
        }
        Ok(())
    }

    /// An I/O failure without the OS path.
    fn io_reason(&self, e: &std::io::Error) -> String {
        match e.kind() {
            std::io::ErrorKind::NotFound => format!("no such file in {}", self.setting),
            std::io::ErrorKind::PermissionDenied => "cannot be read (permission denied)".into(),
            _ => "cannot be read".into(),
        }
    }

    /// The canonical path of `name` under the directory: a regular file
    /// inside it (blocking; for startup and snapshot-side callers).
    pub fn resolve(&self, name: &str) -> Result<PathBuf, String> {
        let rel = self.relative(name)?;
        let base = std::fs::canonicalize(self.dir).map_err(|e| self.unusable(&e))?;
        let full = std::fs::canonicalize(base.join(rel)).map_err(|e| self.io_reason(&e))?;
        self.outside(&full, &base)?;
        let meta = std::fs::metadata(&full).map_err(|e| self.io_reason(&e))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        Ok(full)
    }

    /// Read `name` under the directory, which it may not leave.
    pub async fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        let rel = self.relative(name)?;
        let base = tokio::fs::canonicalize(self.dir)
            .await
            .map_err(|e| self.unusable(&e))?;
        let full = tokio::fs::canonicalize(base.join(rel))
            .await
            .map_err(|e| self.io_reason(&e))?;
        self.outside(&full, &base)?;
        // Checked before opening too: opening a FIFO would wait for a writer.
        let meta = tokio::fs::metadata(&full)
            .await
            .map_err(|e| self.io_reason(&e))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let mut file = tokio::fs::File::open(&full)
            .await
            .map_err(|e| self.io_reason(&e))?;
        let meta = file.metadata().await.map_err(|e| self.io_reason(&e))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let max = self.max_bytes.max(1);
        let mut buf = Vec::new();
        (&mut file)
            .take(max as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| self.io_reason(&e))?;
        if buf.len() > max {
            return Err(format!("is larger than {max} bytes ({})", self.max_setting));
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_stay_inside_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("certs");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(inner.join("ok.pem"), "x").unwrap();
        std::fs::write(dir.path().join("outside.pem"), "x").unwrap();
        let c = Confined {
            dir: &inner,
            setting: "cert_dir",
            max_bytes: 10,
            max_setting: "max",
        };
        assert_eq!(c.read("ok.pem").await.unwrap(), b"x");
        assert!(c.resolve("ok.pem").unwrap().ends_with("ok.pem"));
        for bad in [
            "../outside.pem",
            "/etc/passwd",
            "",
            ".",
            "a/../../outside.pem",
        ] {
            assert!(c.read(bad).await.is_err(), "{bad}");
            assert!(c.resolve(bad).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("outside.pem"), inner.join("link.pem"))
                .unwrap();
            let e = c.read("link.pem").await.unwrap_err();
            assert!(e.contains("inside cert_dir"), "{e}");
            assert!(!e.contains(&dir.path().display().to_string()), "{e}");
            assert!(c.resolve("link.pem").is_err());
        }
        std::fs::create_dir(inner.join("sub")).unwrap();
        assert!(c.resolve("sub").unwrap_err().contains("regular file"));
        assert!(c.resolve("nope.pem").unwrap_err().contains("no such file"));
    }
}
