//! `docent keys`: the keys file of `docent serve`. A new key's secret is
//! printed once; the file keeps only its SHA-256 digest.

use crate::app::Setup;
use crate::args::KeysCommand;
use anyhow::{Context, Result, bail};
use docent_server::keys::{KeyEntry, KeysFile, digest_hex, new_secret};
use std::io::Read;
use std::process::ExitCode;

pub fn run(setup: &Setup, command: KeysCommand) -> Result<ExitCode> {
    let path = setup.keys_file();
    match command {
        KeysCommand::Add {
            name,
            scopes,
            collections,
            replace,
        } => {
            let mut file = KeysFile::load(&path)?;
            let exists = file.keys.iter().any(|k| k.name == name);
            if exists && !replace {
                bail!(
                    "a key named {name:?} exists; pass --replace to rotate it, or pick another name"
                );
            }
            let secret = new_secret()?;
            let entry = KeyEntry {
                name: name.clone(),
                sha256: digest_hex(&secret),
                scopes: scopes
                    .iter()
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?,
                collections,
            };
            file.keys.retain(|k| k.name != name);
            file.keys.push(entry);
            file.save(&path)?;
            eprintln!(
                "{} key {name:?} in {}; a running server uses it within seconds. The secret below is shown only now:",
                if exists { "rotated" } else { "added" },
                path.display()
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            let file = KeysFile::load(&path)?;
            if file.keys.is_empty() {
                eprintln!("no keys in {}", path.display());
            }
            for key in &file.keys {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{}\tscopes={}\tcollections={}",
                    key.name,
                    scopes.join(","),
                    key.collections.join(",")
                );
            }
        }
        KeysCommand::Remove { name } => {
            let mut file = KeysFile::load(&path)?;
            let before = file.keys.len();
            file.keys.retain(|k| k.name != name);
            if file.keys.len() == before {
                bail!(
                    "no key named {name:?} in {}; `docent keys list` shows them",
                    path.display()
                );
            }
            file.save(&path)?;
            eprintln!("removed key {name:?}; a running server refuses it within seconds");
        }
        KeysCommand::Hash => {
            let mut secret = String::new();
            std::io::stdin()
                .read_to_string(&mut secret)
                .context("cannot read the key from standard input")?;
            if secret.trim().is_empty() {
                bail!("no key on standard input: `echo -n KEY | docent keys hash`");
            }
            println!("sha256:{}", digest_hex(&secret));
        }
    }
    Ok(ExitCode::SUCCESS)
}
