//! Files the roles keep: replaced atomically (a crash leaves the old or the new content, never
//! a mix), and secrets readable by their owner only.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ChainError;

fn io(path: &Path) -> impl Fn(std::io::Error) -> ChainError + '_ {
    move |source| ChainError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Replaces `path` with `contents`: a temporary file beside it, fsync, rename, fsync of the
/// directory. Parent directories are created.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ChainError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] of `value` as pretty JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ChainError> {
    write_atomic(
        path,
        &serde_json::to_vec_pretty(value).expect("plain data serializes"),
    )
}

/// Reads JSON written by [`write_json`]; `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ChainError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ChainError::Api(format!("{}: not the expected JSON: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes a secret file: parent directories created, readable by the owner only (0600 on Unix),
/// flushed to disk before returning.
pub fn write_secret(path: &std::path::Path, contents: &[u8]) -> Result<(), ChainError> {
    use std::io::Write;
    let io = |source| ChainError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)
}
