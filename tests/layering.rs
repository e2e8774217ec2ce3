//! The layer order of `src/lib.rs`, checked: every path from one top-level module of `src/`
//! into another (`crate::x…`, `use crate::{x, …}`, `super::…` climbing out of a module) must
//! point down the order in [`LAYERS`]. Read from the source text, so code behind
//! `cfg(test)` and `cfg(feature = "sim")` counts as much as the rest; only the inline
//! `mod tests { … }` blocks (unit tests, free to reach anywhere) and comments and string
//! literals are left out. `main.rs`, `cli.rs` and `device_cli.rs` are the binary's and may use everything.
//! The load generator's modules (`src/bin/edge-load/`) are held to their own order,
//! [`EDGE_LOAD`], the same way.

use std::collections::BTreeMap;
use std::path::Path;

/// The top-level modules of `src/`, bottom up. A module may import only modules of a lower
/// level (never one of its own level, never one above). `sim` is test support on top of
/// everything: nothing imports it.
const LAYERS: &[&[&str]] = &[
    &["time", "histogram", "logger"],
    &["http", "auth"],
    &["ws"],
    &["net"],
    &["protocol"],
    &["state"],
    &["hub"],
    &["server"],
    &["reactor"],
    &["config"],
    &["sim"],
];

/// Files of `src/` that are the binary's, not the library's.
const BINARY: &[&str] = &["main.rs", "cli.rs", "device_cli.rs", "lib.rs"];

fn level(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Source text with comments, string and char literals blanked (newlines kept, so offsets
/// still give line numbers).
fn blank(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            wipe(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            wipe(&mut out, i, j);
            i = j;
        } else if (rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br"))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            let start = i;
            let mut j = i + if rest[0] == b'b' { 2 } else { 1 };
            let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
            j += hashes;
            if b.get(j) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            j = (j + close.len()).min(b.len());
            wipe(&mut out, start, j);
            i = j;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            wipe(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if rest.get(1) == Some(&b'\\') {
                let end = rest[3..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map_or(b.len(), |p| i + 4 + p);
                wipe(&mut out, i, end);
                i = end;
            } else if let Some(len) = src[i + 1..]
                .chars()
                .next()
                .map(char::len_utf8)
                .filter(|&l| rest.get(1 + l) == Some(&b'\''))
            {
                wipe(&mut out, i, i + len + 2);
                i += len + 2;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII was written over whole characters")
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Identifiers and the punctuation that matters for paths, with byte offsets.
fn tokens(src: &str) -> Vec<(usize, &str)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push((start, &src[start..i]));
        } else if b[i..].starts_with(b"::") {
            out.push((i, "::"));
            i += 2;
        } else if b[i].is_ascii_whitespace() || !b[i].is_ascii() {
            i += 1;
        } else {
            out.push((i, &src[i..i + 1]));
            i += 1;
        }
    }
    out
}

/// The first segments of a path after `root::`: one identifier, or the items of a group
/// `{a::b, c, self}` (without `self`).
fn heads<'a>(t: &[(usize, &'a str)], at: usize) -> Vec<&'a str> {
    match t.get(at).map(|t| t.1) {
        Some("{") => {
            let (mut depth, mut j, mut out, mut first) = (0, at, Vec::new(), true);
            while let Some(&(_, s)) = t.get(j) {
                match s {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "," if depth == 1 => first = true,
                    s if depth == 1 && first => {
                        first = false;
                        if s != "self" && s != "*" {
                            out.push(s);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            out
        }
        Some(s) if is_ident(s.as_bytes()[0]) && s != "self" => vec![s],
        _ => Vec::new(),
    }
}

/// Every top-level module the file at module path `path` (`["hub", "screen"]`) names, with
/// the line it is named on; the file's own module is left out.
fn imports(src: &str, path: &[&str]) -> Vec<(String, usize)> {
    let text = blank(src);
    let t = tokens(&text);
    let line = |off: usize| text[..off].matches('\n').count() + 1;
    let mut out = Vec::new();
    // Inline modules: the brace depth each was opened at (their code sits one `super` deeper).
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < t.len() {
        let (off, s) = t[i];
        let after_sep = i > 0 && t[i - 1].1 == "::";
        match s {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "mod" if t.get(i + 2).map(|t| t.1) == Some("{") => {
                if t[i + 1].1 == "tests" {
                    // Skip the unit tests' block whole.
                    let mut d = 0;
                    let mut j = i + 2;
                    loop {
                        match t[j].1 {
                            "{" => d += 1,
                            "}" => {
                                d -= 1;
                                if d == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    i = j + 1;
                    continue;
                }
                inline.push(depth);
            }
            "crate" if !after_sep && t.get(i + 1).map(|t| t.1) == Some("::") => {
                out.extend(
                    heads(&t, i + 2)
                        .into_iter()
                        .map(|h| (h.to_string(), line(off))),
                );
            }
            "super" if !after_sep => {
                let mut k = 0;
                let mut j = i;
                while t.get(j).map(|t| t.1) == Some("super")
                    && t.get(j + 1).map(|t| t.1) == Some("::")
                {
                    k += 1;
                    j += 2;
                }
                if k > 0 && k >= path.len() + inline.len() {
                    out.extend(heads(&t, j).into_iter().map(|h| (h.to_string(), line(off))));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.retain(|(m, _)| m != path[0]);
    out
}

/// `src/hub/screen.rs` → `["hub", "screen"]`, `src/net/mod.rs` → `["net"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The import graph of the library: module → module → where it is first named.
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("bin") || BINARY.iter().any(|b| rel == Path::new(b)) {
            continue;
        }
        let path = module_path(rel);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = std::fs::read_to_string(&f).unwrap();
        let edges = g.entry(path[0].to_string()).or_default();
        for (m, line) in imports(&text, &path) {
            edges
                .entry(m)
                .or_insert_with(|| format!("src/{}:{line}", rel.display()));
        }
    }
    g
}

#[test]
fn every_import_between_top_level_modules_points_down_the_layers() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, edges) in &g {
        let Some(lf) = level(from) else {
            wrong.push(format!(
                "module `{from}` has no place in LAYERS (tests/layering.rs)"
            ));
            continue;
        };
        for (to, at) in edges {
            match level(to) {
                None => wrong.push(format!(
                    "{at}: `{from}` names `{to}`, which is not a module of src/"
                )),
                Some(lt) if lt >= lf => wrong.push(format!(
                    "{at}: `{from}` imports `{to}`, which is not below it"
                )),
                _ => {}
            }
        }
    }
    for (from, edges) in &g {
        println!(
            "{from} → {}",
            edges.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(
        wrong.is_empty(),
        "upward or unknown imports:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_of_src_has_a_place_in_the_layers() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(
        declared.len() > 5,
        "read no module declarations from lib.rs"
    );
    let placed: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut a = declared.clone();
    let mut b = placed.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(
        a, b,
        "lib.rs declares {declared:?}, LAYERS places {placed:?}"
    );
}

#[test]
fn the_reader_finds_paths_and_skips_tests_comments_and_strings() {
    let src = r##"
use crate::net::{ConnId, Outbox};
use crate::{histogram, ws::frame::Opcode, self};
use super::super::time::Instant;
use super::{display::Layout, auth};
// crate::config::X in a comment
/* crate::reactor /* nested */ crate::reactor */
const S: &str = "crate::server::Server";
const R: &str = r#"crate::server"#;
const C: char = '"'; const E: char = 'é'; fn f<'a>(x: &'a str) -> u8 { b'\'' }
#[cfg(feature = "sim")]
type T = crate::sim::World;
mod inner { use super::super::super::state::Store; }
#[cfg(test)]
mod tests { use crate::reactor::Reactor; fn g() { let _ = { 1 }; } }
use crate::logger;
"##;
    let found: Vec<String> = imports(src, &["hub", "screen"])
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(
        found,
        ["net", "histogram", "ws", "time", "sim", "state", "logger"]
    );
    let from_root: Vec<String> = imports("use super::{display, auth};", &["hub"])
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(from_root, ["display", "auth"]);
}

/// The load generator's modules (`src/bin/edge-load/`), bottom up, in the order its
/// `main.rs` states; the same rule as [`LAYERS`]: a module imports only modules below it.
const EDGE_LOAD: &[&[&str]] = &[
    &["stats", "tls"],
    &["wsc"],
    &["peer", "driver", "soak", "floor"],
    &["report"],
    &["route"],
    &["idle", "venue_cpu"],
];

#[test]
fn the_load_generators_modules_import_only_those_below_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/edge-load");
    let level = |m: &str| EDGE_LOAD.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let f = e.unwrap().path();
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "main" {
            continue;
        }
        let Some(lf) = level(&name) else {
            wrong.push(format!(
                "module `{name}` has no place in EDGE_LOAD (tests/layering.rs)"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        // Names that are no module (`crate::Server`, `crate::wait_for_port`) are main.rs's.
        for (m, line) in imports(&text, &[&name]) {
            if level(&m).is_some_and(|lt| lt >= lf) {
                wrong.push(format!(
                    "src/bin/edge-load/{name}.rs:{line}: `{name}` imports `{m}`, which is not below it"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward imports in the load generator:\n{}",
        wrong.join("\n")
    );
}
