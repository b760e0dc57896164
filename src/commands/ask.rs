//! `docent ask`: one answer on this thread, streamed to stdout, then its sources.

use crate::app::Setup;
use crate::args::AskArgs;
use anyhow::Result;
use docent_core::{SamplingParams, SearchFilter};
use docent_query::{AnswerEvent, AskRequest, AskResponse};
use std::io::Write;
use std::process::ExitCode;

pub fn run(setup: &Setup, args: AskArgs) -> Result<ExitCode> {
    let parts = setup.embedding()?;
    let collection = setup.collection(&parts)?;
    let generator = setup.generator(args.model.as_deref())?;
    let g = &setup.config.generate;
    let asker = setup.asker(&parts, collection.store.clone(), generator)?;
    let request = AskRequest {
        question: args.question.clone(),
        top_k: args.top_k,
        filter: SearchFilter {
            source: args.source.clone(),
            ..Default::default()
        },
        mode: None,
        rerank: None,
        answer_style: args.style,
        history: Vec::new(),
        sampling: SamplingParams {
            max_tokens: args.max_tokens.unwrap_or(g.max_tokens),
            temperature: args.temperature.unwrap_or(g.temperature),
            ..g.sampling()
        },
    };
    let stream = !args.json;
    let mut stdout = std::io::stdout().lock();
    let response = asker.ask(&request, |event| {
        if let (true, AnswerEvent::Piece(text)) = (stream, event) {
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
        }
    })?;
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&response)?)?;
    } else {
        writeln!(stdout)?;
        print_sources(&mut stdout, &response)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_sources(out: &mut impl Write, response: &AskResponse) -> Result<()> {
    if response.citations.is_empty() {
        writeln!(out, "\n(no relevant passages found in the collection)")?;
        return Ok(());
    }
    let heading = if response.answerable {
        "Sources:"
    } else {
        "Possibly related:"
    };
    writeln!(out, "\n{heading}")?;
    for c in &response.citations {
        let lines = match c.page {
            Some(page) => format!("page {page}, lines {}-{}", c.line_start, c.line_end),
            None => format!("lines {}-{}", c.line_start, c.line_end),
        };
        let place = match &c.heading {
            Some(h) => format!("{} § {h}, {lines}", c.source),
            None => format!("{}, {lines}", c.source),
        };
        let mark = if c.cited { "" } else { " (not cited)" };
        writeln!(out, "[{}] {place} (score {:.2}){mark}", c.n, c.score)?;
    }
    Ok(())
}
