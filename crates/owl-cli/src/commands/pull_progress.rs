//! How a pull shows its progress: one bar per file (bytes, rate, ETA) when stderr is a
//! terminal, one JSON event a line on stdout with `--json`, nothing otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use owl_store::PullEvent;

use crate::printer;

enum Mode {
    Json,
    Bars { multi: MultiProgress, bars: Mutex<HashMap<String, ProgressBar>> },
    Quiet,
}

pub struct PullProgress {
    mode: Mode,
}

impl PullProgress {
    /// JSON events with `json`, else bars on a terminal, else silence.
    pub fn new(json: bool) -> PullProgress {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Quiet
        };
        PullProgress { mode }
    }

    pub fn handle(&self, event: &PullEvent) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    let mut out = std::io::stdout().lock();
                    // A closed stdout surfaces when the command prints its result.
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            Mode::Bars { multi, bars } => {
                let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    PullEvent::Resolving { source } => {
                        let _ = multi.println(format!("resolving {source}"));
                    }
                    PullEvent::Waiting { file } => {
                        let _ = multi.println(format!("waiting for another pull of {file} to finish"));
                    }
                    PullEvent::Download { file, completed, total } => {
                        let bar = bars.entry(file.clone()).or_insert_with(|| {
                            let bar = multi.add(ProgressBar::new(total.unwrap_or(0)));
                            bar.set_style(bar_style(total.is_some()));
                            bar.set_message(file.clone());
                            bar.set_position(*completed);
                            bar.reset_eta();
                            bar
                        });
                        if let Some(t) = total {
                            bar.set_length(*t);
                        }
                        bar.set_position(*completed);
                    }
                    PullEvent::Verifying { file } => {
                        if let Some(bar) = bars.get(file) {
                            bar.set_message(format!("{file} (verifying sha256)"));
                        }
                    }
                    PullEvent::Stored { file, size, cached, .. } => {
                        let what = if *cached { "already in the store" } else { "verified" };
                        if let Some(bar) = bars.remove(file) {
                            bar.finish_and_clear();
                        }
                        let _ = multi.println(format!("{file}: {} {what}", printer::human_bytes(*size)));
                    }
                    PullEvent::Done { name, .. } => {
                        for (_, bar) in bars.drain() {
                            bar.finish_and_clear();
                        }
                        let _ = multi.println(format!("{name}: ready"));
                    }
                }
            }
        }
    }
}

fn bar_style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{msg:30!} [{bar:28}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{msg:30!} {spinner} {bytes} {bytes_per_sec}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// The progress sink for resolving a MODEL argument (run, generate, serve, ...): bars on a
/// terminal, silence otherwise; never JSON on stdout, which belongs to the command.
pub fn for_model_argument() -> PullProgress {
    let mut p = PullProgress::new(false);
    if matches!(p.mode, Mode::Json) {
        p.mode = Mode::Quiet;
    }
    p
}
