//! Where quotes come from.
//!
//! On a TDX guest the kernel's configfs-tsm interface produces them: create
//! an entry under `/sys/kernel/config/tsm/report/`, check its `provider`
//! is `tdx_guest`, write the 64 bytes of report data to `inblob`, read the
//! quote from `outblob`, and check `generation` moved by exactly one (if it
//! moved more, another process wrote to the same entry and the quote may not
//! hold our report data). Everywhere else, [`FakeTdxProvider`] fabricates a
//! quote of the same layout that every verifier can recognise as fake.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::quote::{build_fake_quote, Measurements};

/// The configfs-tsm report directory on a TDX guest.
pub const DEFAULT_TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// Why no quote could be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No configfs-tsm on this machine.
    #[error("no TDX here: {0} does not exist (a TDX guest with configfs-tsm is needed; use --tee fake elsewhere)")]
    NotAvailable(PathBuf),
    /// The TSM provider is not TDX.
    #[error("configfs-tsm provider is {0:?}, not \"tdx_guest\"")]
    WrongProvider(String),
    /// Someone else wrote to the entry while we used it.
    #[error("configfs-tsm generation went from {before} to {after}: the report was written concurrently, retry")]
    GenerationRace {
        /// Generation read before writing inblob.
        before: u64,
        /// Generation read after reading outblob.
        after: u64,
    },
    /// A file of the interface could not be used.
    #[error("configfs-tsm {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Produces quotes binding 64 bytes of report data.
pub trait QuoteProvider: Send + Sync {
    /// A quote over `report_data`.
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, ProviderError>;
    /// A short name for logs and CLI output (`tdx`, `fake_tdx`).
    fn name(&self) -> &'static str;
}

/// FAKE attestation for machines without TDX. With the default (all-zero)
/// measurements it makes COCOON's own fake quote, the 64 bytes of report
/// data that a reference `fake_tdx` peer makes and accepts. With other
/// measurements (tests of image-hash allow-lists) it makes a quote with the
/// TDX v4 layout, those measurements and no Intel signature, which only this
/// implementation reads. Only the `any` and `fake_tdx` policies accept either.
#[derive(Debug, Clone, Default)]
pub struct FakeTdxProvider {
    /// The measurements the fake quotes claim.
    pub measurements: Measurements,
}

impl QuoteProvider for FakeTdxProvider {
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, ProviderError> {
        if self.measurements == Measurements::default() {
            return Ok(report_data.to_vec());
        }
        Ok(build_fake_quote(&self.measurements, report_data))
    }

    fn name(&self) -> &'static str {
        "fake_tdx"
    }
}

/// Real TDX quotes through configfs-tsm.
#[derive(Debug, Clone)]
pub struct ConfigfsTsmProvider {
    report_dir: PathBuf,
}

impl Default for ConfigfsTsmProvider {
    fn default() -> Self {
        Self::new(DEFAULT_TSM_REPORT_DIR)
    }
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ConfigfsTsmProvider {
    /// A provider over the given report directory (the default is
    /// [`DEFAULT_TSM_REPORT_DIR`]; tests point it elsewhere).
    pub fn new(report_dir: impl Into<PathBuf>) -> Self {
        Self {
            report_dir: report_dir.into(),
        }
    }

    /// Runs the configfs-tsm protocol on an existing entry directory.
    pub fn quote_in_entry(entry: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, ProviderError> {
        let provider = read_text(&entry.join("provider"))?;
        if provider != "tdx_guest" {
            return Err(ProviderError::WrongProvider(provider));
        }
        let before = read_generation(entry)?;
        let inblob = entry.join("inblob");
        fs::write(&inblob, report_data).map_err(|source| ProviderError::Io {
            path: inblob,
            source,
        })?;
        let outblob = entry.join("outblob");
        let quote = fs::read(&outblob).map_err(|source| ProviderError::Io {
            path: outblob,
            source,
        })?;
        let after = read_generation(entry)?;
        if after != before + 1 {
            return Err(ProviderError::GenerationRace { before, after });
        }
        Ok(quote)
    }
}

impl QuoteProvider for ConfigfsTsmProvider {
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, ProviderError> {
        if !self.report_dir.is_dir() {
            return Err(ProviderError::NotAvailable(self.report_dir.clone()));
        }
        let name = format!(
            "cocoon-{}-{}",
            std::process::id(),
            ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let entry = self.report_dir.join(name);
        fs::create_dir(&entry).map_err(|source| ProviderError::Io {
            path: entry.clone(),
            source,
        })?;
        let result = Self::quote_in_entry(&entry, report_data);
        // configfs entries are removed with rmdir even though they hold files.
        let _ = fs::remove_dir(&entry);
        result
    }

    fn name(&self) -> &'static str {
        "tdx"
    }
}

fn read_text(path: &Path) -> Result<String, ProviderError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| ProviderError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn read_generation(entry: &Path) -> Result<u64, ProviderError> {
    let path = entry.join("generation");
    let text = read_text(&path)?;
    text.parse().map_err(|_| ProviderError::Io {
        path,
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}
