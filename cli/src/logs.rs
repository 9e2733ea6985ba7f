//! `squall logs`: what functions printed, read from the local cluster's
//! logs.
//!
//! An executor tags every line a call prints (stdout, stderr, `logging`)
//! with the call: `[call CALLER-SEQ FUNCTION] text` (see the executor's
//! `squall_runtime.py`). Executors write into their compute node's log
//! (`STATE_DIR/logs/compute-N.log`), so this reads those tagged lines from
//! every log in the directory, oldest file position first, and prints them
//! prefixed with the log's name. `--function` and `--call` filter them;
//! `--all` prints every line of every role's log instead; `-f` keeps
//! reading as the logs grow, until interrupted.

use anyhow::{Context, Result};
use clap::Args;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `--follow` looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

#[derive(Args, Debug, Clone, PartialEq)]
pub struct LogsArgs {
    /// Keep printing lines as they are written, until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the output of calls of this function.
    #[arg(long)]
    pub function: Option<String>,
    /// Only the output of this call (its id as `Future.call_id` gives it,
    /// CALLER-SEQ: 16 hex digits, a dash, a number).
    #[arg(long)]
    pub call: Option<String>,
    /// Every line of every role's log, not only functions' output.
    #[arg(long, conflicts_with_all = ["function", "call"])]
    pub all: bool,
}

/// One function-output line: its call and function, and the text.
#[derive(Debug, PartialEq, Eq)]
pub struct Tagged<'a> {
    pub call: &'a str,
    pub function: &'a str,
    pub text: &'a str,
}

/// The call tag of an executor's output line, if it has one.
pub fn parse(line: &str) -> Option<Tagged<'_>> {
    let rest = line.strip_prefix("[call ")?;
    let (tag, text) = rest.split_once("] ")?;
    let (call, function) = tag.split_once(' ')?;
    Some(Tagged {
        call,
        function,
        text,
    })
}

impl LogsArgs {
    /// Whether `line` is to be printed.
    fn wants(&self, line: &str) -> bool {
        if self.all {
            return true;
        }
        let Some(tagged) = parse(line) else {
            return false;
        };
        self.function
            .as_deref()
            .is_none_or(|f| f == tagged.function)
            && self.call.as_deref().is_none_or(|c| c == tagged.call)
    }
}

/// A log being read: where it is, how far, and what it is called.
struct Reader {
    path: PathBuf,
    name: String,
    offset: u64,
    /// A line not yet ended (the writer is mid-line).
    partial: String,
}

impl Reader {
    /// Prints the complete lines `args` wants that were written since the
    /// last read.
    fn read(&mut self, args: &LogsArgs) -> Result<()> {
        let mut file =
            File::open(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced (a node started again): from the start.
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(file);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            let n = reader.read_until(b'\n', &mut bytes)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            self.partial.push_str(&String::from_utf8_lossy(&bytes));
            if !self.partial.ends_with('\n') {
                break;
            }
            let line = std::mem::take(&mut self.partial);
            let line = line.trim_end_matches('\n');
            if args.wants(line) {
                println!("{:<12} {line}", self.name);
            }
        }
        Ok(())
    }
}

/// The logs in `dir`, by name.
fn logs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "no logs at {} (is there a local cluster? `squall up` writes them there)",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Prints what `args` asks for from the logs of the cluster in `state_dir`.
pub fn run(args: &LogsArgs, state_dir: &Path) -> Result<()> {
    let dir = state_dir.join("logs");
    let mut readers: Vec<Reader> = Vec::new();
    loop {
        for path in logs_in(&dir)? {
            if !readers.iter().any(|r| r.path == path) {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                readers.push(Reader {
                    path,
                    name,
                    offset: 0,
                    partial: String::new(),
                });
            }
        }
        for reader in &mut readers {
            // A log removed meanwhile (a node scaled away) is skipped.
            if reader.path.exists() {
                reader.read(args)?;
            }
        }
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_line_parses_and_others_do_not() {
        let line = "[call 00000000000000ff-3 square] hello world";
        assert_eq!(
            parse(line),
            Some(Tagged {
                call: "00000000000000ff-3",
                function: "square",
                text: "hello world",
            })
        );
        assert_eq!(parse("2026-12-05T10:00:00Z INFO executor started"), None);
        assert_eq!(parse("[call broken"), None);
    }

    #[test]
    fn filters_pick_by_function_and_call() {
        let args = |function: Option<&str>, call: Option<&str>| LogsArgs {
            follow: false,
            function: function.map(str::to_string),
            call: call.map(str::to_string),
            all: false,
        };
        let line = "[call 00000000000000ff-3 square] hi";
        assert!(args(None, None).wants(line));
        assert!(args(Some("square"), None).wants(line));
        assert!(!args(Some("cube"), None).wants(line));
        assert!(args(None, Some("00000000000000ff-3")).wants(line));
        assert!(!args(None, Some("00000000000000ff-4")).wants(line));
        assert!(!args(None, None).wants("INFO scheduler started"));
        let all = LogsArgs {
            all: true,
            ..args(None, None)
        };
        assert!(all.wants("INFO scheduler started"));
    }

    #[test]
    fn only_complete_lines_are_read_and_a_follow_picks_up_the_rest() {
        let dir = std::env::temp_dir().join(format!("squall-logs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("compute-0.log");
        std::fs::write(&path, "[call a-1 f] one\n[call a-1 f] tw").unwrap();
        let mut reader = Reader {
            path: path.clone(),
            name: "compute-0".into(),
            offset: 0,
            partial: String::new(),
        };
        let args = LogsArgs {
            follow: false,
            function: None,
            call: None,
            all: false,
        };
        reader.read(&args).unwrap();
        assert_eq!(reader.partial, "[call a-1 f] tw");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\n").unwrap();
        reader.read(&args).unwrap();
        assert_eq!(reader.partial, "");
        assert_eq!(reader.offset, std::fs::metadata(&path).unwrap().len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
