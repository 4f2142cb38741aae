//! Which files make up a crate: its root files (from the workspace's manifests) and, for each
//! top-level module, every file reached through `mod name;` declarations.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::cfg_test::blank_test_items;
use crate::refs::ident_at;
use crate::strip::code_only;
use crate::Error;

/// One source file, as text and as code with comments and literals blanked out.
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) code: Vec<char>,
    text: Vec<char>,
}

impl Source {
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        let raw = fs::read_to_string(path).map_err(|e| Error::Read(path.to_owned(), e))?;
        let mut code = code_only(&raw);
        blank_test_items(&mut code);
        Ok(Self {
            path: path.to_owned(),
            code,
            text: raw.chars().collect(),
        })
    }
}

/// A `mod name;` declaration and the file it loads.
pub(crate) struct ModDecl {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    /// Whether the file keeps its own children beside it: `mod.rs`, or loaded via `#[path]`.
    pub(crate) mod_rs_like: bool,
}

/// The out-of-line modules `source` declares. A crate root, `mod.rs` and a file loaded through
/// `#[path]` keep their children beside them; `a.rs` keeps them in `a/`.
pub(crate) fn declared_modules(source: &Source, mod_rs_like: bool) -> Result<Vec<ModDecl>, Error> {
    let dir = source.path.parent().unwrap_or(Path::new("."));
    let children_dir = if mod_rs_like {
        dir.to_owned()
    } else {
        let stem = source.path.file_stem().unwrap_or_default();
        dir.join(stem)
    };
    let code = &source.code;
    let mut decls = Vec::new();
    let mut item_start = 0;
    let mut i = 0;
    while i < code.len() {
        match code[i] {
            ';' | '{' | '}' => {
                i += 1;
                item_start = i;
                continue;
            }
            _ => {}
        }
        let Some((word, end)) = ident_at(code, i) else {
            i += 1;
            continue;
        };
        let starts_word = i == 0 || !crate::strip::is_ident(code[i - 1]);
        if !(starts_word && word == "mod") {
            i = end;
            continue;
        }
        let name_at = skip_space(code, end);
        let Some((name, name_end)) = ident_at(code, name_at) else {
            i = end;
            continue;
        };
        let after = skip_space(code, name_end);
        if code.get(after) == Some(&';') {
            let missing = || Error::MissingModule {
                declared_in: source.path.clone(),
                line: line_of(code, i),
                name: name.clone(),
            };
            let (file, mod_rs_like) = match path_attribute(source, item_start, i) {
                Some(path) => (dir.join(path), true),
                None => {
                    let file = child_file(&children_dir, &name).ok_or_else(missing)?;
                    let mod_rs = file.file_name().is_some_and(|n| n == "mod.rs");
                    (file, mod_rs)
                }
            };
            if !file.is_file() {
                return Err(missing());
            }
            decls.push(ModDecl {
                name,
                file,
                mod_rs_like,
            });
        }
        i = name_end;
    }
    Ok(decls)
}

/// `name.rs` or `name/mod.rs` in `dir`, whichever exists.
fn child_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The value of a `#[path = "…"]` attribute between `from` and `to`, read from the original
/// text because the stripped code has the literal blanked.
fn path_attribute(source: &Source, from: usize, to: usize) -> Option<String> {
    let code = &source.code;
    let hash = (from..to).find(|&i| {
        code[i] == '#'
            && code[i + 1..to]
                .iter()
                .filter(|c| !c.is_whitespace())
                .take(5)
                .collect::<String>()
                == "[path"
    })?;
    let open = hash + source.text[hash..to].iter().position(|&c| c == '"')?;
    let close = open + 1 + source.text[open + 1..to].iter().position(|&c| c == '"')?;
    Some(source.text[open + 1..close].iter().collect())
}

/// Every file of the module whose file is `file`: itself and all it declares, recursively.
pub(crate) fn module_files(file: &Path, mod_rs_like: bool) -> Result<Vec<Source>, Error> {
    let mut out = Vec::new();
    let mut pending = vec![(file.to_owned(), mod_rs_like)];
    // A module tree is finite, but a `#[path]` loop would not be: bound the walk.
    while let Some((path, mod_rs_like)) = pending.pop() {
        if out.len() > 10_000 {
            return Err(Error::TooManyFiles(file.to_owned()));
        }
        let source = Source::read(&path)?;
        for decl in declared_modules(&source, mod_rs_like)? {
            pending.push((decl.file, decl.mod_rs_like));
        }
        out.push(source);
    }
    Ok(out)
}

fn skip_space(code: &[char], mut i: usize) -> usize {
    while code.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

pub(crate) fn line_of(code: &[char], pos: usize) -> usize {
    1 + code[..pos.min(code.len())]
        .iter()
        .filter(|&&c| c == '\n')
        .count()
}

/// The crate root files of every member of the workspace at `workspace`: `[lib]`, `[[bin]]`,
/// `[[test]]`, `[[example]]` and `[[bench]]` paths from each member's manifest, and the files
/// Cargo finds by itself (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`, `tests/*.rs`,
/// `examples/*.rs`, `benches/*.rs`). Excluded directories (the fuzz workspace) are not members.
pub fn workspace_crate_roots(workspace: &Path) -> Result<Vec<PathBuf>, Error> {
    let manifest = workspace.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|e| Error::Read(manifest.clone(), e))?;
    let mut roots = Vec::new();
    for member in workspace_members(&text) {
        let dir = workspace.join(&member);
        let member_manifest = dir.join("Cargo.toml");
        let text = fs::read_to_string(&member_manifest)
            .map_err(|e| Error::Read(member_manifest.clone(), e))?;
        roots.extend(
            target_paths(&text)
                .into_iter()
                .map(|p| lexical(&dir.join(p))),
        );
        for auto in ["src/lib.rs", "src/main.rs"] {
            roots.push(dir.join(auto));
        }
        for auto_dir in ["src/bin", "tests", "examples", "benches"] {
            roots.extend(
                rust_files_in(&dir.join(auto_dir))
                    .map_err(|e| Error::Read(dir.join(auto_dir), e))?,
            );
        }
    }
    roots.retain(|p| p.is_file());
    roots.sort();
    roots.dedup();
    Ok(roots)
}

/// `path` with `a/..` pairs folded away (a target of one member may live in another's folder:
/// `path = "../tests/e2e/main.rs"`), so that each root file is counted once.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn rust_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// The quoted strings of the `members = [...]` array of a workspace manifest.
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    quoted_strings(&rest[open + 1..close])
}

/// `path = "…"` values inside the target tables of a package manifest.
fn target_paths(manifest: &str) -> Vec<String> {
    const TARGETS: [&str; 5] = ["[lib]", "[[bin]]", "[[test]]", "[[example]]", "[[bench]]"];
    let mut in_target = false;
    let mut paths = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_target = TARGETS.contains(&line);
        } else if in_target {
            if let Some(value) = line.strip_prefix("path") {
                if value.trim_start().starts_with('=') {
                    paths.extend(quoted_strings(value).into_iter().take(1));
                }
            }
        }
    }
    paths
}

fn quoted_strings(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}
