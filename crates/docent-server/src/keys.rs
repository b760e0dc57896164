//! API keys with scopes and collections.
//!
//! A key is a random secret given to a client once; the server keeps only
//! its SHA-256 digest (a 256-bit random secret needs no slow hash: there is
//! nothing to guess). Each key carries scopes (`read`, `ingest`, `admin`;
//! `admin` implies the others, `ingest` does not imply `read`) and the
//! collections it may touch (`*` for all). Keys come from `[server]
//! api_keys` and from a keys file, which is re-read when it changes or on
//! SIGHUP, so keys are added, rotated and revoked without a restart. A
//! presented key is compared with every stored digest in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Ask, search, list and read documents, embeddings, conversations.
    Read,
    /// Upload and delete documents.
    Ingest,
    /// Everything, and the operational routes when they are closed.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            "admin" => Ok(Scope::Admin),
            other => Err(KeyError::Invalid(format!(
                "unknown scope {other:?} (expected read, ingest or admin)"
            ))),
        }
    }
}

/// Which collections a key may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    All,
    Only(BTreeSet<String>),
}

impl Reach {
    fn from_names(names: &[String]) -> Reach {
        if names.iter().any(|n| n == "*") {
            Reach::All
        } else {
            Reach::Only(names.iter().cloned().collect())
        }
    }

    pub fn includes(&self, collection: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Only(names) => names.contains(collection),
        }
    }
}

/// Who is calling: the key's name, scopes and collections. With no keys
/// configured every caller is [`Caller::open`].
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's name (`None` when the server needs no key).
    pub key: Option<String>,
    scopes: BTreeSet<Scope>,
    pub reach: Reach,
}

impl Caller {
    /// Anyone, on a server without keys.
    pub fn open() -> Caller {
        Caller {
            key: None,
            scopes: [Scope::Admin].into(),
            reach: Reach::All,
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn may_use(&self, collection: &str) -> bool {
        self.reach.includes(collection)
    }
}

/// One key as stored: a name, the digest of its secret, what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Shown in logs and `docent keys list`; never the secret.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// Collection names, or `*` for every collection.
    pub collections: Vec<String>,
}

/// The keys file (TOML): `[[keys]]` tables of [`KeyEntry`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read or write the keys file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KeysFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<KeysFile, KeyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeysFile::default()),
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let file: KeysFile = toml::from_str(&text).map_err(|e| {
            KeyError::Invalid(format!("{} is not a valid keys file: {e}", path.display()))
        })?;
        file.check()?;
        Ok(file)
    }

    /// Writes `path` atomically (a temporary file renamed over it), readable
    /// by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        self.check()?;
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = format!(
            "# docent API keys: digests only (`docent keys add` prints each secret once).\n{}",
            toml::to_string(self).map_err(|e| KeyError::Invalid(e.to_string()))?
        );
        let temporary = path.with_extension("toml.tmp");
        std::fs::write(&temporary, text).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        std::fs::rename(&temporary, path).map_err(io)
    }

    fn check(&self) -> Result<(), KeyError> {
        let mut names = BTreeSet::new();
        for entry in &self.keys {
            if !names.insert(entry.name.as_str()) {
                return Err(KeyError::Invalid(format!(
                    "two keys are named {:?}",
                    entry.name
                )));
            }
            ApiKey::from_entry(entry)?;
        }
        Ok(())
    }
}

/// A key ready to be checked.
#[derive(Clone, Debug)]
pub struct ApiKey {
    name: String,
    digest: [u8; 32],
    scopes: BTreeSet<Scope>,
    reach: Reach,
}

impl ApiKey {
    pub fn from_entry(entry: &KeyEntry) -> Result<ApiKey, KeyError> {
        let bad = |what: &str| KeyError::Invalid(format!("key {:?}: {what}", entry.name));
        if entry.name.trim().is_empty() {
            return Err(KeyError::Invalid("a key has an empty name".into()));
        }
        let digest = parse_digest(&entry.sha256)
            .ok_or_else(|| bad("sha256 must be 64 hexadecimal digits"))?;
        if entry.scopes.is_empty() {
            return Err(bad("needs at least one scope (read, ingest, admin)"));
        }
        if entry.collections.is_empty() {
            return Err(bad("needs at least one collection (or \"*\" for all)"));
        }
        Ok(ApiKey {
            name: entry.name.clone(),
            digest,
            scopes: entry.scopes.iter().copied().collect(),
            reach: Reach::from_names(&entry.collections),
        })
    }

    /// A key from `[server] api_keys`: `sha256:<hex>` or, for compatibility,
    /// the secret itself (hashed at once). These keys are admins of every
    /// collection.
    pub fn from_config(index: usize, value: &str) -> Result<ApiKey, KeyError> {
        let digest = match value.strip_prefix("sha256:") {
            Some(hex) => parse_digest(hex).ok_or_else(|| {
                KeyError::Invalid(format!(
                    "server.api_keys[{index}]: sha256: must be followed by 64 hexadecimal digits"
                ))
            })?,
            None => Sha256::digest(value.trim().as_bytes()).into(),
        };
        Ok(ApiKey {
            name: format!("config-{index}"),
            digest,
            scopes: [Scope::Admin].into(),
            reach: Reach::All,
        })
    }

    fn caller(&self) -> Caller {
        Caller {
            key: Some(self.name.clone()),
            scopes: self.scopes.clone(),
            reach: self.reach.clone(),
        }
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a secret, as the keys file stores it.
pub fn digest_hex(secret: &str) -> String {
    Sha256::digest(secret.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new secret: `dk_` and 256 random bits in hex.
pub fn new_secret() -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| KeyError::Invalid(format!("no randomness from the OS: {e}")))?;
    Ok(format!(
        "dk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the keys file looked like when last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    exists: bool,
}

fn stamp(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            exists: true,
        },
        Err(_) => Stamp {
            modified: None,
            len: 0,
            exists: false,
        },
    }
}

/// The keys a server accepts. Shared by the request path (reads) and the
/// reloader (rare writes).
pub struct KeyRing {
    fixed: Vec<ApiKey>,
    file: Option<PathBuf>,
    loaded: RwLock<Arc<Vec<ApiKey>>>,
    seen: Mutex<Option<Stamp>>,
}

impl KeyRing {
    /// A server that needs no key.
    pub fn open() -> KeyRing {
        KeyRing {
            fixed: Vec::new(),
            file: None,
            loaded: RwLock::new(Arc::new(Vec::new())),
            seen: Mutex::new(None),
        }
    }

    /// Keys from the config, plus those of `file` (read now; it may not
    /// exist yet, and is watched for changes by [`KeyRing::reload_if_changed`]).
    pub fn new(fixed: Vec<ApiKey>, file: Option<PathBuf>) -> Result<KeyRing, KeyError> {
        let ring = KeyRing {
            fixed,
            file,
            loaded: RwLock::new(Arc::new(Vec::new())),
            seen: Mutex::new(None),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// True when requests need a key: some key is configured, or a keys
    /// file exists (even an empty one: then every request is refused).
    pub fn required(&self) -> bool {
        !self.fixed.is_empty()
            || self.file.as_deref().is_some_and(Path::exists)
            || !self.current().is_empty()
    }

    fn current(&self) -> Arc<Vec<ApiKey>> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The caller a presented secret identifies, if any. Every stored digest
    /// is compared, matched or not.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let loaded = self.current();
        let mut found = None;
        for key in self.fixed.iter().chain(loaded.iter()) {
            if constant_time_eq(&key.digest, &digest) && found.is_none() {
                found = Some(key.caller());
            }
        }
        found
    }

    /// Re-reads the keys file. On error the keys in use stay as they were.
    /// Returns the number of keys from the file.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let before = stamp(path);
        let file = KeysFile::load(path)?;
        let keys = file
            .keys
            .iter()
            .map(ApiKey::from_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let count = keys.len();
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(before);
        Ok(count)
    }

    /// Reloads when the keys file changed since it was last read (its
    /// modification time, size or existence). `Ok(None)` when unchanged.
    pub fn reload_if_changed(&self) -> Result<Option<usize>, KeyError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let now = stamp(path);
        let seen = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen == Some(now) {
            return Ok(None);
        }
        let result = self.reload();
        if result.is_err() {
            // Don't retry a broken file until it changes again.
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        }
        result.map(Some)
    }

    /// The keys file, when one is configured.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, secret: &str, scopes: &[Scope], collections: &[&str]) -> KeyEntry {
        KeyEntry {
            name: name.into(),
            sha256: digest_hex(secret),
            scopes: scopes.to_vec(),
            collections: collections.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn a_key_is_known_by_its_digest_and_carries_its_scopes_and_collections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        KeysFile {
            keys: vec![entry("support", "s3cret-a", &[Scope::Read], &["support"])],
        }
        .save(&path)
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret-a"), "{text}");
        let ring = KeyRing::new(vec![ApiKey::from_config(0, "root").unwrap()], Some(path)).unwrap();
        assert!(ring.required());
        let caller = ring.authenticate("s3cret-a").unwrap();
        assert_eq!(caller.key.as_deref(), Some("support"));
        assert!(caller.has(Scope::Read) && !caller.has(Scope::Ingest));
        assert!(caller.may_use("support") && !caller.may_use("hr"));
        let root = ring.authenticate("root").unwrap();
        assert!(root.has(Scope::Ingest) && root.may_use("hr"));
        assert!(ring.authenticate("s3cret-b").is_none());
        assert!(ring.authenticate("").is_none());
        let hashed = ApiKey::from_config(1, &format!("sha256:{}", digest_hex("x"))).unwrap();
        let ring = KeyRing::new(vec![hashed], None).unwrap();
        assert!(ring.authenticate("x").is_some());
    }

    #[test]
    fn a_changed_file_is_picked_up_and_a_broken_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ring = KeyRing::new(Vec::new(), Some(path.clone())).unwrap();
        assert!(!ring.required(), "no file, no keys: open");
        KeysFile {
            keys: vec![entry("a", "old", &[Scope::Read], &["*"])],
        }
        .save(&path)
        .unwrap();
        assert_eq!(ring.reload_if_changed().unwrap(), Some(1));
        assert!(ring.required());
        assert!(ring.authenticate("old").is_some());
        assert_eq!(ring.reload_if_changed().unwrap(), None);
        // Rotation: the old secret stops working, the new one starts.
        KeysFile {
            keys: vec![entry("a", "new", &[Scope::Read], &["*"])],
        }
        .save(&path)
        .unwrap();
        ring.reload().unwrap();
        assert!(ring.authenticate("old").is_none());
        assert!(ring.authenticate("new").is_some());
        std::fs::write(&path, "[[keys]]\nname = \"a\"\nsha256 = \"nothex\"\n").unwrap();
        assert!(ring.reload_if_changed().is_err());
        assert!(ring.authenticate("new").is_some(), "kept after a bad edit");
        // An emptied file still requires keys: nobody gets in.
        std::fs::write(&path, "").unwrap();
        ring.reload().unwrap();
        assert!(ring.required());
        assert!(ring.authenticate("new").is_none());
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        let bad = |e: KeyEntry| ApiKey::from_entry(&e).unwrap_err().to_string();
        assert!(bad(entry("a", "x", &[], &["*"])).contains("scope"));
        assert!(bad(entry("a", "x", &[Scope::Read], &[])).contains("collection"));
        let mut short = entry("a", "x", &[Scope::Read], &["*"]);
        short.sha256.pop();
        assert!(bad(short).contains("64 hexadecimal"));
        let twice = KeysFile {
            keys: vec![
                entry("a", "x", &[Scope::Read], &["*"]),
                entry("a", "y", &[Scope::Read], &["*"]),
            ],
        };
        assert!(twice.check().unwrap_err().to_string().contains("two keys"));
        assert!("write".parse::<Scope>().is_err());
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), 3 + 64);
        assert_ne!(secret, new_secret().unwrap());
    }
}
