//! `docent serve`: the HTTP API until Ctrl-C or SIGTERM, then a graceful stop.

use crate::app::Setup;
use crate::args::ServeArgs;
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(setup: &Setup, args: ServeArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let generator = setup.generator(None)?;
    let s = &setup.config.server;
    // The default collection first, then the others of `[server] collections`:
    // each its own store, catalogue and conversations; the models are shared.
    let mut opened = Vec::new();
    let mut served = Vec::new();
    for name in std::iter::once(setup.collection.clone()).chain(setup.other_served_names()?) {
        let one = setup.for_collection(&name);
        let collection = one
            .collection(&parts)
            .with_context(|| format!("cannot open collection '{name}'"))?;
        let asker = Arc::new(one.asker(&parts, collection.store.clone(), generator.clone())?);
        served.push(one.served(asker, &parts, &collection, true)?);
        opened.push(collection);
    }
    let keys = setup.key_ring()?;
    let keys_needed = keys.required();
    let state = setup.server_state(served, &parts, keys);
    let bind = args.bind.unwrap_or_else(|| s.bind.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let grace = std::time::Duration::from_secs(s.shutdown_grace_secs);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let names: Vec<&String> = state.collections.served.keys().collect();
        eprintln!(
            "docent serving on http://{} (collections {:?}, default '{}'; {})",
            listener.local_addr()?,
            names,
            setup.collection,
            if keys_needed {
                "API keys required".to_string()
            } else {
                format!(
                    "no API keys: anyone who reaches this address can read and change every collection; add one with `docent keys add`, kept in {}",
                    setup.keys_file().display()
                )
            }
        );
        tokio::spawn(watch_keys(state.keys.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(docent_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        tokio::select! {
            result = &mut server => {
                return result.context("server task failed")?.context("server failed");
            }
            _ = super::shutdown_signal() => {}
        }
        eprintln!("docent: shutting down; finishing in-flight requests (up to {grace:?})");
        let _ = stop.send(());
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result
                .context("server task failed")?
                .context("server failed"),
            Err(_) => {
                eprintln!("docent: shutdown deadline passed; dropping the remaining requests");
                Ok(())
            }
        }
    })?;
    for collection in &opened {
        collection.store.flush()?;
    }
    eprintln!("docent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the keys file when it changes (checked every 2 s) and on
/// SIGHUP, so keys are added, rotated and revoked without a restart. A file
/// that does not parse leaves the keys in use as they were.
async fn watch_keys(keys: Arc<docent_server::KeyRing>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        #[cfg(unix)]
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        #[cfg(not(unix))]
        let forced = {
            tick.tick().await;
            false
        };
        let ring = keys.clone();
        let result = tokio::task::spawn_blocking(move || {
            if forced {
                ring.reload().map(Some)
            } else {
                ring.reload_if_changed()
            }
        })
        .await;
        match result {
            Ok(Ok(Some(n))) => eprintln!(
                "docent: keys reloaded from {} ({n} keys)",
                keys.file()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => eprintln!(
                "docent: the keys file was not reloaded, the previous keys stay in use: {e}"
            ),
            Err(e) => eprintln!("docent: the keys reload failed: {e}"),
        }
    }
}
