//! All console output goes through [`Console`]: human progress on stderr (a live progress bar on a terminal,
//! plain lines otherwise), results on stdout (a table for people, JSON with `--json`).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod report;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Cheap to clone: the parallel steps of one command share it.
#[derive(Clone)]
pub struct Console {
    json: bool,
    bar: Arc<Mutex<Option<ProgressBar>>>,
}

impl Console {
    pub fn new(json: bool) -> Console {
        Console { json, bar: Arc::new(Mutex::new(None)) }
    }

    fn bar(&self) -> Option<ProgressBar> {
        self.bar.lock().expect("console lock").clone()
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// A cargo-style status line on stderr: `   Creating stack secure-endpoints`.
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        self.line(format!("{verb:>12} {message}"));
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        self.line(format!("warning: {message}"));
    }

    /// Prints an error and its causes, one per line, without repeating what the top line already says.
    pub fn error(&self, err: &anyhow::Error) {
        let mut text = format!("error: {err}");
        let mut last = err.to_string();
        for cause in err.chain().skip(1) {
            let c = cause.to_string();
            if !last.contains(&c) {
                text.push_str(&format!("\n  caused by: {c}"));
            }
            last = c;
        }
        self.line(text);
    }

    /// Starts a progress bar over `total` steps (terminal only; elsewhere finished steps are plain lines).
    pub fn start_progress(&self, total: usize) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed} {wide_msg}").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        *self.bar.lock().expect("console lock") = Some(bar);
    }

    pub fn progress_message(&self, message: String) {
        if let Some(bar) = self.bar() {
            bar.set_message(message);
        }
    }

    /// One finished step: `     created  sg/api  sg-0123  0.21s`.
    pub fn step(&self, verb: &str, node: &str, detail: &str, elapsed: Option<Duration>) {
        let time = elapsed.map(|d| format!("  {:.2}s", d.as_secs_f64())).unwrap_or_default();
        self.line(format!("{verb:>12} {node:<28} {detail}{time}"));
        if let Some(bar) = self.bar() {
            bar.inc(1);
        }
    }

    /// A step that needed no work: counted on the progress bar, not printed.
    pub fn skip_step(&self) {
        if let Some(bar) = self.bar() {
            bar.inc(1);
        }
    }

    pub fn finish_progress(&self) {
        if let Some(bar) = self.bar.lock().expect("console lock").take() {
            bar.finish_and_clear();
        }
    }

    /// The command's result for people, on stdout (skipped with --json).
    pub fn result(&self, text: &str) {
        if !self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }

    /// The command's result for machines, on stdout (only with --json).
    pub fn json(&self, value: &serde_json::Value) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(value).expect("JSON value serialises"));
        }
    }

    /// On a terminal, asks before deleting; elsewhere `--yes` is required, so a script never deletes by accident.
    pub fn confirm_deletion(&self, stack: &str, region: &str, count: usize, yes: bool) -> anyhow::Result<()> {
        use std::io::BufRead;
        if yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to delete {count} resources of stack {stack} without confirmation\n  hint: pass --yes when running non-interactively"
            );
        }
        {
            let mut err = std::io::stderr().lock();
            let _ =
                write!(err, "Delete {count} resources of stack {stack} in {region}? Type the stack name to confirm: ");
            let _ = err.flush();
        }
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != stack {
            anyhow::bail!("not confirmed; nothing was deleted");
        }
        Ok(())
    }

    /// Colours a result line (an ANSI SGR code) when stdout is a terminal and NO_COLOR is unset.
    pub fn paint(&self, code: &str, text: String) -> String {
        let color = !self.json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text }
    }

    /// A command's typed `--json` report (see [`report`]), on stdout.
    pub fn report<T: serde::Serialize>(&self, value: &T) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(value).expect("a report serialises"));
        }
    }

    fn line(&self, text: String) {
        match self.bar() {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }
}

/// The readable tail of an id: `arn:aws:ecs:…:service/stack/api` → `service/stack/api`; other ids unchanged.
pub fn short_id(id: &str) -> String {
    match id.strip_prefix("arn:") {
        Some(rest) => rest.splitn(5, ':').nth(4).unwrap_or(id).to_string(),
        None => id.to_string(),
    }
}
