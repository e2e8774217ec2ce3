//! The size bars of the module layout, checked on the source itself: no file in `src/hub/` or
//! `src/server/` (their subfolders included) holds more than 800 lines outside `#[cfg(test)]`
//! items, and no function anywhere in `src/` (the binaries included) is longer than 200 lines
//! outside `#[cfg(test)]` items.
//!
//! The reader relies on rustfmt's layout (CI runs `cargo fmt --check`): an item's body closes
//! with a `}` alone at the indentation of the line that opened it. A function is counted from
//! its `fn` line to that brace, both included; a trait method without a body is no function.
//! A file's size is its lines minus those of its `#[cfg(test)]` items: when the tests come last
//! that is the number of lines before the first `#[cfg(test)]`, and a test-only helper in the
//! middle of a file is not counted either.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Most lines of non-test code in one file of `src/hub/` or `src/server/`.
const FILE_BAR: usize = 800;
/// Most lines of one function outside tests, anywhere in `src/`.
const FN_BAR: usize = 200;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Where the item whose first line is `start` ends (exclusive): after its `;` if it has no
/// body, after its header line if the body is on it, else after the `}` alone at its
/// indentation. `None` if the file ends first.
fn item_end(lines: &[&str], start: usize) -> Option<usize> {
    let pad = " ".repeat(indent(lines[start]));
    let close = format!("{pad}}}");
    let close_semi = format!("{pad}}};");
    let mut k = start;
    // The header: up to the line that opens the body or ends the item.
    loop {
        let t = lines.get(k)?.trim_end();
        if t.ends_with('{') {
            break;
        }
        if t.ends_with(';') || t.ends_with('}') {
            return Some(k + 1);
        }
        k += 1;
    }
    (k + 1..lines.len())
        .find(|&j| {
            let t = lines[j].trim_end();
            t == close || t == close_semi
        })
        .map(|j| j + 1)
}

/// The line ranges of the items under a `#[cfg(test)]` (their attributes included).
fn test_regions(lines: &[&str]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            i += 1;
            continue;
        }
        let mut start = i + 1;
        while start < lines.len() && {
            let t = lines[start].trim_start();
            t.starts_with("#[") || t.starts_with("//")
        } {
            start += 1;
        }
        let end = if start < lines.len() {
            item_end(lines, start).unwrap_or(lines.len())
        } else {
            lines.len()
        };
        out.push(i..end);
        i = end;
    }
    out
}

/// The name of the function a line declares, if it declares one.
fn fn_name(line: &str) -> Option<&str> {
    let mut t = line.trim_start();
    loop {
        if let Some(rest) = t.strip_prefix("pub(") {
            t = &rest[rest.find(") ")? + 2..];
            continue;
        }
        let before = t;
        for q in [
            "pub ",
            "const ",
            "async ",
            "unsafe ",
            "default ",
            "extern \"C\" ",
        ] {
            if let Some(rest) = t.strip_prefix(q) {
                t = rest;
            }
        }
        if t == before {
            break;
        }
    }
    let rest = t.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

/// Lines of non-test code, and each function outside tests longer than `bar` as
/// `(name, first line (1-based), lines)`.
fn measure(src: &str, bar: usize) -> (usize, Vec<(String, usize, usize)>) {
    let lines: Vec<&str> = src.lines().collect();
    let tests = test_regions(&lines);
    let in_tests = |i: usize| tests.iter().any(|r| r.contains(&i));
    let code = (0..lines.len()).filter(|&i| !in_tests(i)).count();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if in_tests(i) {
            continue;
        }
        let Some(name) = fn_name(line) else { continue };
        let len = match item_end(&lines, i) {
            Some(end) => end - i,
            None => lines.len() - i,
        };
        if len > bar {
            long.push((name.to_string(), i + 1, len));
        }
    }
    (code, long)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rel(p: &Path) -> String {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn no_file_of_the_hub_or_the_server_is_over_the_bar() {
    let mut files = Vec::new();
    for dir in ["hub", "server"] {
        rust_files(&src_dir().join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {files:?}");
    let over: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let (code, _) = measure(&std::fs::read_to_string(p).unwrap(), FN_BAR);
            (code > FILE_BAR).then(|| format!("{}: {code} lines", rel(p)))
        })
        .collect();
    assert!(
        over.is_empty(),
        "over {FILE_BAR} lines of non-test code (split by what each part owns):\n{}",
        over.join("\n")
    );
}

#[test]
fn no_function_of_src_is_over_the_bar() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    assert!(files.len() > 30, "found only {files:?}");
    let mut over = Vec::new();
    for p in &files {
        let (_, long) = measure(&std::fs::read_to_string(p).unwrap(), FN_BAR);
        for (name, line, len) in long {
            over.push(format!("{}:{line}: fn {name}: {len} lines", rel(p)));
        }
    }
    assert!(
        over.is_empty(),
        "functions over {FN_BAR} lines:\n{}",
        over.join("\n")
    );
}

/// The reader on a made-up file: what it counts and what it skips.
#[test]
fn the_reader_counts_functions_and_skips_tests_and_declarations() {
    let src = r#"//! A module.
pub trait T {
    fn declared(&self) -> u8;
    fn empty(&self) {}
}
impl S {
    pub(crate) fn long<A>(
        a: A,
    ) -> u8
    where
        A: Copy,
    {
        x += 1;
        x += 1;
        x += 1;
        0
    }

    fn short(&self) {
        x += 1;
        x += 1;
    }
}
#[cfg(test)]
#[allow(dead_code)]
fn helper() {
    x += 1;
    x += 1;
    x += 1;
}
pub const fn top() -> u8 {
    let f = |x: u8| {
        x
    };
    f(1)
}
#[cfg(test)]
mod tests {
    fn in_tests() {
        x += 1;
        x += 1;
        x += 1;
    }
}
"#;
    let (code, long) = measure(src, 4);
    let long: Vec<(&str, usize, usize)> = long
        .iter()
        .map(|(n, line, len)| (n.as_str(), *line, *len))
        .collect();
    // 44 lines, of which the helper's 7 and the test module's 8 are tests.
    assert_eq!(code, 29);
    // `long` from its `fn` line to its brace; `short` (4 lines) is at the bar, not over it;
    // `top` ends at its own brace, not the closure's.
    assert_eq!(long, [("long", 7, 11), ("top", 31, 6)]);
    assert_eq!(measure(src, 200).1, []);
}
