//! The dependency graph between the top-level modules of one crate, and its cycles.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::refs::crate_mentions;
use crate::tree::{declared_modules, module_files, Source};
use crate::Error;

/// Where an edge was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file that names the other module.
    pub file: PathBuf,
    /// 1-based line of the first mention in that file.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Which top-level module of a crate names which other, through `crate::` paths.
#[derive(Debug)]
pub struct ModuleGraph {
    root: PathBuf,
    modules: BTreeSet<String>,
    /// `(from, to)` → the first mention of `to` in `from`'s files.
    edges: BTreeMap<(String, String), Location>,
}

/// A cycle between top-level modules: `modules[0] → modules[1] → … → modules[0]`, each step
/// with the place that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The crate root the modules belong to.
    pub root: PathBuf,
    /// The modules in order; the last one names the first.
    pub modules: Vec<String>,
    /// `steps[i]` is where `modules[i]` names `modules[(i + 1) % len]`.
    pub steps: Vec<Location>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "module cycle in {}: ", self.root.display())?;
        for (module, step) in self.modules.iter().zip(&self.steps) {
            write!(f, "{module} → ({step}) ")?;
        }
        write!(f, "{}", self.modules[0])
    }
}

impl ModuleGraph {
    /// Reads the crate whose root file is `root` (`src/lib.rs`, `src/main.rs`, a test's
    /// `main.rs`) and every file of its top-level modules.
    pub fn read(root: &Path) -> Result<Self, Error> {
        let root_source = Source::read(root)?;
        let decls = declared_modules(&root_source, true)?;
        let modules: BTreeSet<String> = decls.iter().map(|d| d.name.clone()).collect();
        let mut edges = BTreeMap::new();
        for decl in &decls {
            for source in module_files(&decl.file, decl.mod_rs_like)? {
                for mention in crate_mentions(&source.code) {
                    if mention.module == decl.name || !modules.contains(&mention.module) {
                        continue;
                    }
                    edges
                        .entry((decl.name.clone(), mention.module))
                        .or_insert_with(|| Location {
                            file: source.path.clone(),
                            line: mention.line,
                        });
                }
            }
        }
        Ok(Self {
            root: root.to_owned(),
            modules,
            edges,
        })
    }

    /// The top-level modules `module` names.
    pub fn dependencies<'a>(&'a self, module: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges
            .keys()
            .filter(move |(from, _)| from == module)
            .map(|(_, to)| to.as_str())
    }

    /// One shortest cycle for every group of modules that depend on each other (each strongly
    /// connected component with more than one module), in module order.
    pub fn cycles(&self) -> Vec<Cycle> {
        let mut seen = BTreeSet::new();
        let mut cycles = Vec::new();
        for start in &self.modules {
            if seen.contains(start) {
                continue;
            }
            let Some(path) = self.shortest_cycle_through(start) else {
                continue;
            };
            let component = self.component_of(start);
            seen.extend(component);
            let steps = path
                .iter()
                .zip(path.iter().cycle().skip(1))
                .map(|(from, to)| self.edges[&(from.clone(), to.clone())].clone())
                .collect();
            cycles.push(Cycle {
                root: self.root.clone(),
                modules: path,
                steps,
            });
        }
        cycles
    }

    /// Breadth-first from `start` back to itself; `None` when `start` is on no cycle.
    fn shortest_cycle_through(&self, start: &str) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for next in self.dependencies(at) {
                if next == start {
                    let mut path = vec![at.to_owned()];
                    let mut cursor = at;
                    while cursor != start {
                        cursor = came_from[cursor];
                        path.push(cursor.to_owned());
                    }
                    path.reverse();
                    return Some(path);
                }
                if !came_from.contains_key(next) {
                    came_from.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// The modules reachable from `start` that also reach it.
    fn component_of(&self, start: &str) -> BTreeSet<String> {
        let forward = self.reachable(start, false);
        let backward = self.reachable(start, true);
        forward.intersection(&backward).cloned().collect()
    }

    fn reachable(&self, start: &str, reverse: bool) -> BTreeSet<String> {
        let mut seen = BTreeSet::from([start.to_owned()]);
        let mut stack = vec![start.to_owned()];
        while let Some(at) = stack.pop() {
            for (from, to) in self.edges.keys() {
                let (here, there) = if reverse { (to, from) } else { (from, to) };
                if *here == at && seen.insert(there.clone()) {
                    stack.push(there.clone());
                }
            }
        }
        seen
    }
}
