//! Labels files of the flat layout (see `OpenOptions::labels`).

use anyhow::{Result, bail, ensure};

pub(super) struct LabelLine {
    pub(super) number: usize,
    pub(super) file: Option<String>,
    pub(super) label: String,
}

pub(super) fn parse_labels(text: &str) -> Result<Vec<LabelLine>> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let (file, label) = match tokens[..] {
            [label] => (None, label),
            [file, label] => (Some(file.to_string()), label),
            _ => bail!(
                "line {}: expected `<file> <label>` or `<label>`, found {line:?}",
                i + 1
            ),
        };
        lines.push(LabelLine {
            number: i + 1,
            file,
            label: label.to_string(),
        });
    }
    ensure!(!lines.is_empty(), "no labels");
    let paired = lines[0].file.is_some();
    if let Some(odd) = lines.iter().find(|l| l.file.is_some() != paired) {
        bail!(
            "line {}: mixes `<file> <label>` lines with plain `<label>` lines",
            odd.number
        );
    }
    Ok(lines)
}
