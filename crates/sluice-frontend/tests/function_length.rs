//! Keeps the frontend's functions short enough to read at a glance: none in
//! `src` may be longer than 80 lines. Tests are exempt, and so is the list
//! of metric registrations in `metrics.rs`, which is one long table.

use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 80;

/// Functions allowed to be longer, as `file:function`.
const EXEMPT: &[&str] = &["metrics.rs:new"];

/// Every `.rs` file under `directory`.
fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

/// The name of the function a line starts, if it starts one.
fn function_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

/// Each function of `source` outside its tests, with its length in lines:
/// from its `fn` line to the line that closes it at the same indentation.
fn function_lengths(source: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let end_of_code = lines
        .iter()
        .position(|line| line.trim() == "#[cfg(test)]" && !line.starts_with(' '))
        .unwrap_or(lines.len());
    let mut lengths = Vec::new();
    for (start, line) in lines[..end_of_code].iter().enumerate() {
        let Some(name) = function_name(line) else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let closing = format!("{}}}", " ".repeat(indent));
        let single_line = line.trim_end().ends_with('}') || line.trim_end().ends_with(';');
        if single_line {
            continue;
        }
        let end = lines[start..end_of_code]
            .iter()
            .position(|candidate| candidate.starts_with(&closing) && candidate.trim() == "}")
            .map_or(end_of_code, |offset| start + offset);
        lengths.push((name.to_owned(), end - start + 1));
    }
    lengths
}

#[test]
fn no_function_in_the_frontend_is_longer_than_80_lines() {
    let source_directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut too_long = Vec::new();
    for path in rust_files(&source_directory) {
        let source = std::fs::read_to_string(&path).expect("readable source");
        let file = path.file_name().expect("a file name").to_string_lossy();
        for (name, lines) in function_lengths(&source) {
            let exempt = EXEMPT.contains(&format!("{file}:{name}").as_str());
            if lines > MAX_FUNCTION_LINES && !exempt {
                too_long.push(format!("{}:{name} is {lines} lines", path.display()));
            }
        }
    }
    assert!(too_long.is_empty(), "{}", too_long.join("\n"));
}

#[test]
fn the_counter_measures_from_fn_to_its_closing_brace() {
    let source = "fn short() {\n    one();\n}\n\npub(crate) async fn two(\n    a: u8,\n) {\n    if a {\n    }\n}\n";
    assert_eq!(
        function_lengths(source),
        vec![("short".to_owned(), 3), ("two".to_owned(), 6)]
    );
}

#[test]
fn sluice_cache_is_used_by_exactly_one_file_of_the_frontend() {
    let source_directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let users: Vec<PathBuf> = rust_files(&source_directory)
        .into_iter()
        .filter(|path| {
            let source = std::fs::read_to_string(path).expect("readable source");
            let code = source.split("\n#[cfg(test)]").next().unwrap_or_default();
            code.contains("sluice_cache")
        })
        .collect();
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users[0].ends_with("stages/results_cache.rs"), "{users:?}");
}
