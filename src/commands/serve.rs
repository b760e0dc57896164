//! `docent serve`: the HTTP API until Ctrl-C or SIGTERM, then a graceful stop.

use crate::app::Setup;
use crate::args::ServeArgs;
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(setup: &Setup, args: ServeArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let collection = setup.collection(&parts)?;
    let generator = setup.generator(None)?;
    let s = &setup.config.server;
    let asker = Arc::new(setup.asker(&parts, collection.store.clone(), generator)?);
    let state = setup.server_state(asker, &parts, &collection, s.api_keys.clone(), true)?;
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
        eprintln!(
            "docent serving on http://{} (collection '{}')",
            listener.local_addr()?,
            setup.collection
        );
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
    collection.store.flush()?;
    eprintln!("docent stopped");
    Ok(ExitCode::SUCCESS)
}
