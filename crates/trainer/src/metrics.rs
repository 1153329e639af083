//! `metrics.jsonl`: one JSON object per line, appended and flushed as training goes.
//!
//! Every line has `"phase"` and `"kind"` (`step`, `epoch` or `eval`) and `"epoch"`. A crash can leave a
//! torn last line; [`read_metrics`] skips it and says so, and a resumed run first rewrites the file
//! without the lines of epochs that its checkpoint does not contain.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

/// Appends JSON lines to a `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Io(path.to_path_buf(), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes one line (a JSON object) and flushes it to the OS.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::Io(self.path.clone(), e))
    }
}

/// The records of a `metrics.jsonl`, and a warning when a torn last line was skipped.
///
/// A line that is not valid JSON anywhere but at the end is an error naming the line.
pub fn read_metrics(path: &Path) -> Result<(Vec<Value>, Option<String>)> {
    let (lines, warning) = read_lines(path)?;
    Ok((lines.into_iter().map(|(_, v)| v).collect(), warning))
}

/// Records with their text as written.
type Lines = Vec<(String, Value)>;

/// The records of a `metrics.jsonl` with their text as written, and the torn-line warning.
fn read_lines(path: &Path) -> Result<(Lines, Option<String>)> {
    let bytes = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], None)),
        Err(e) => return Err(Error::Io(path.to_path_buf(), e)),
    };
    // A torn line may end inside a multi-byte character: read lossily, the JSON check catches it.
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut records = Vec::with_capacity(lines.len());
    let mut warning = None;
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => records.push((line.to_string(), v)),
            Ok(_) if i + 1 == lines.len() => {
                warning = Some(format!(
                    "{}: skipped a torn last line (not a JSON object)",
                    path.display()
                ));
            }
            Ok(_) => {
                return Err(Error::Checkpoint(format!(
                    "{}: line {} is not a JSON object",
                    path.display(),
                    i + 1
                )));
            }
            Err(e) if i + 1 == lines.len() => {
                warning = Some(format!(
                    "{}: skipped a torn last line ({e})",
                    path.display()
                ));
            }
            Err(e) => {
                return Err(Error::Checkpoint(format!(
                    "{}: line {} is not JSON: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok((records, warning))
}

/// Rewrites `path` keeping only the records for which `keep` is true (atomically); returns the warning
/// of [`read_metrics`], if any.
pub fn retain_metrics(path: &Path, keep: impl Fn(&Value) -> bool) -> Result<Option<String>> {
    let (records, warning) = read_lines(path)?;
    let mut text = String::new();
    // The kept lines are copied as written: parsing and printing again could change a float's digits.
    for (line, _) in records.iter().filter(|(_, r)| keep(r)) {
        text.push_str(line);
        text.push('\n');
    }
    crate::checkpoint::write_atomic(path, text.as_bytes())?;
    Ok(warning)
}
