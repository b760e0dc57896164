//! What each command does: the bodies behind `args.rs`, each built from the
//! wiring in `app.rs` and handing the work to the library crates.

mod ask;
mod documents;
mod ingest;
mod keys;
mod models;
mod serve;

use crate::app::Setup;
use crate::args::{Cli, Command, ConfigCommand, DocumentsCommand, Global, StoreCommand};
use crate::config::Config;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::ExtractWorker { memory_mb } = cli.command {
        return Ok(docent_ingest::extract::pdf::run_worker(memory_mb));
    }
    let setup = setup(&cli.global)?;
    match cli.command {
        Command::Models { command } => models::run(&setup, command),
        Command::Ingest(args) => ingest::run(&setup, args),
        Command::Ask(args) => ask::run(&setup, args),
        Command::Serve(args) => serve::run(&setup, args),
        Command::Keys { command } => keys::run(&setup, command),
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            let mut shown = setup.config.clone();
            // The abstention threshold in force: the generation model's own
            // when none is configured.
            shown.query = shown.query_for(shown.generation_model());
            for key in &mut shown.server.api_keys {
                *key = "<redacted>".into();
            }
            if !shown.store.qdrant.api_key.is_empty() {
                shown.store.qdrant.api_key = "<redacted>".into();
            }
            print!("{}", toml::to_string_pretty(&shown)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            command:
                StoreCommand::Migrate {
                    from,
                    to,
                    batch,
                    json,
                },
        } => {
            let summary = crate::migrate::run(&setup, from, to, batch)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "copied {} points and {} catalogue records from {} to {} in {:.1}s{}; counts verified",
                    summary.points,
                    summary.documents,
                    summary.from,
                    summary.to,
                    summary.seconds,
                    if summary.resumed { " (resumed)" } else { "" }
                );
                println!(
                    "to use it, set store.kind = \"{}\" (e.g. DOCENT__STORE__KIND={})",
                    to.name(),
                    to.name()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            command:
                StoreCommand::Verify {
                    from,
                    to,
                    queries,
                    json,
                },
        } => {
            let report = crate::migrate::verify(&setup, from, to, queries)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let p = &report.points;
                println!(
                    "points: {} in {}, {} in {}; {} only in the first, {} only in the second, {} differ",
                    p.source_points,
                    report.from,
                    p.target_points,
                    report.to,
                    p.missing_in_target,
                    p.missing_in_source,
                    p.differing
                );
                for example in &p.examples {
                    println!("  {example}");
                }
                let c = &report.catalogue;
                println!(
                    "catalogue: {} and {} records, {} differ",
                    c.source_records, c.target_records, c.differing
                );
                for (mode, t) in &report.top10 {
                    println!(
                        "top 10 ({mode}): {}/{} identical, {} the same up to the order of equal scores, mean overlap {:.3}",
                        t.identical_lists, report.queries, t.equivalent_lists, t.mean_overlap
                    );
                }
                println!(
                    "{}",
                    if report.identical {
                        "identical"
                    } else {
                        "the two copies differ"
                    }
                );
            }
            Ok(if report.identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Eval { command } => {
            docent_eval::eval(&setup, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { command } => {
            docent_eval::bench(&setup, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Documents {
            command: DocumentsCommand::List { json },
        } => documents::list(&setup, json),
        Command::ExtractWorker { memory_mb } => {
            Ok(docent_ingest::extract::pdf::run_worker(memory_mb))
        }
    }
}

fn setup(global: &Global) -> Result<Setup> {
    let config = Config::load(global.config.as_deref())?;
    apply_thread_env(&config);
    let collection = global
        .collection
        .clone()
        .unwrap_or_else(|| config.collection.clone());
    crate::app::check_collection_name(&collection)?;
    Ok(Setup {
        data_dir: config.data_dir(global.data_dir.as_deref()),
        models_dir: config.models_dir(global.models_dir.as_deref()),
        collection,
        config,
    })
}

/// Thread counts for candle and rayon must be in the environment before their
/// pools start; this runs first thing, while the process has a single thread.
#[allow(unsafe_code)]
fn apply_thread_env(config: &Config) {
    for (key, value) in config.thread_env() {
        // SAFETY: called from main before any other thread exists.
        unsafe { std::env::set_var(key, value) };
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
