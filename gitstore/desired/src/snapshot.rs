//! Loading the desired state of a commit from Git objects (never the work tree).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use gix::ObjectId;
use tracing::debug;

use crate::error::{LoadError, Rejection, ValidationError};
use crate::object::{DesiredObject, ObjectKey};
use crate::parse::{ParsedFile, parse_file};

/// Default limit on the size of one manifest file: 4 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What to load from a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Folder of the manifests in the repository (`/`-separated, no leading `/`); empty
    /// for the whole tree.
    pub path: String,
    /// Files larger than this are rejected with a clear error instead of being read.
    pub max_file_bytes: u64,
    /// The range Services' cluster IPs come from: a `spec.clusterIP` outside it is an error.
    pub service_cidr: ServiceCidr,
}

/// An IPv4 range for cluster IPs (default 198.19.0.0/16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    /// The network address.
    pub base: std::net::Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Default for ServiceCidr {
    fn default() -> Self {
        ServiceCidr {
            base: std::net::Ipv4Addr::new(198, 19, 0, 0),
            prefix: 16,
        }
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl ServiceCidr {
    /// Whether `ip` is a usable address of the range (not its network or broadcast address).
    pub fn contains_usable(&self, ip: std::net::Ipv4Addr) -> bool {
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        let (b, i) = (u64::from(u32::from(self.base)), u64::from(u32::from(ip)));
        i > b && i - b < size.saturating_sub(1)
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            path: String::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            service_cidr: ServiceCidr::default(),
        }
    }
}

impl LoadOptions {
    /// Options for a sub-folder (`""`, `"."` or `"/"` mean the whole tree).
    pub fn with_path(path: &str) -> Self {
        LoadOptions {
            path: normalize_path(path),
            ..LoadOptions::default()
        }
    }
}

fn normalize_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a file name is read as a manifest.
pub fn is_manifest_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// One file of a snapshot: its blob and what it gave.
#[derive(Debug)]
pub(crate) struct FileEntry {
    /// The blob (None for entries that are not read: symlinks, submodules).
    pub blob: Option<ObjectId>,
    pub objects: Vec<Arc<DesiredObject>>,
    pub errors: Vec<ValidationError>,
}

/// The desired state at one commit: every object of the manifest folder, validated.
///
/// A `Snapshot` returned by [`Snapshot::load`] passed every check; a commit that did not
/// comes back as [`LoadError::Rejected`] with all its errors.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The commit.
    pub commit: ObjectId,
    /// The tree of the manifest folder at that commit.
    pub tree: ObjectId,
    /// The manifest folder (`""`: the whole tree).
    pub path: String,
    /// Every object, by key.
    pub objects: BTreeMap<ObjectKey, Arc<DesiredObject>>,
    pub(crate) files: BTreeMap<String, Arc<FileEntry>>,
    pub(crate) dirs: BTreeMap<String, ObjectId>,
    pub(crate) options: LoadOptions,
    pub(crate) stats: LoadStats,
    pub(crate) has_duplicates: bool,
}

type ObjectMap = BTreeMap<ObjectKey, Arc<DesiredObject>>;

/// Builds the object map from every file; duplicates become errors (the first in path
/// order stays). Returns the map and whether there were duplicates.
fn assemble_full(
    files: &BTreeMap<String, Arc<FileEntry>>,
    errors: &mut Vec<ValidationError>,
) -> (ObjectMap, bool) {
    let mut objects = ObjectMap::new();
    let mut duplicates = false;
    for f in files.values() {
        for o in &f.objects {
            match objects.entry(o.key.clone()) {
                std::collections::btree_map::Entry::Occupied(first) => {
                    duplicates = true;
                    let first = first.get();
                    let at = first.position_of(&crate::path!["metadata", "name"]);
                    errors.push(o.error_at(
                        &crate::path!["metadata", "name"],
                        false,
                        format!(
                            "{} is defined twice: here and at {}:{}:{}",
                            o.key, first.provenance.path, at.line, at.column
                        ),
                    ));
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(o.clone());
                }
            }
        }
    }
    (objects, duplicates)
}

/// The previous snapshot's map with the objects of changed and removed files taken out
/// and those of changed and new files put in. None when that meets a duplicate (the full
/// assembly then reports it in path order).
fn assemble_delta(prev: &Snapshot, files: &BTreeMap<String, Arc<FileEntry>>) -> Option<ObjectMap> {
    let mut objects = prev.objects.clone();
    for (path, old) in &prev.files {
        if files.get(path).is_some_and(|new| Arc::ptr_eq(new, old)) {
            continue;
        }
        for o in &old.objects {
            if objects.get(&o.key).is_some_and(|cur| Arc::ptr_eq(cur, o)) {
                objects.remove(&o.key);
            }
        }
    }
    for (path, new) in files {
        if prev
            .files
            .get(path)
            .is_some_and(|old| Arc::ptr_eq(new, old))
        {
            continue;
        }
        for o in &new.objects {
            match objects.entry(o.key.clone()) {
                std::collections::btree_map::Entry::Occupied(_) => return None,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(o.clone());
                }
            }
        }
    }
    Some(objects)
}

/// What a load did and how long each phase took (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadStats {
    /// Blobs read (the others were carried over from the previous snapshot).
    pub blobs_read: usize,
    /// Walking the trees.
    pub walk_ms: f64,
    /// Reading blobs.
    pub read_ms: f64,
    /// Finding the commit that last changed each read file.
    pub history_ms: f64,
    /// Parsing and checking each read file.
    pub parse_ms: f64,
    /// Assembling the snapshot and the checks across objects.
    pub validate_ms: f64,
    /// The whole load.
    pub total_ms: f64,
}

/// Opens the Git repository at or above `dir` (bare or with a work tree).
pub fn open_repository(dir: &Path) -> Result<gix::Repository, LoadError> {
    let mut repo = gix::discover(dir).map_err(|e| LoadError::Open {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    repo.object_cache_size_if_unset(16 * 1024 * 1024);
    Ok(repo)
}

/// Resolves a branch, tag, commit id or other revision to a commit.
pub fn resolve_commit(repo: &gix::Repository, rev: &str) -> Result<ObjectId, LoadError> {
    let id = match repo.rev_parse_single(rev) {
        Ok(id) => id.detach(),
        Err(e) => {
            if let Ok(head) = repo.head()
                && head.is_unborn()
            {
                return Err(LoadError::EmptyRepository {
                    branch: head.referent_name().map(|n| n.shorten().to_string()),
                });
            }
            return Err(LoadError::RevisionNotFound {
                rev: rev.to_owned(),
                message: e.to_string(),
            });
        }
    };
    let object = repo
        .find_object(id)
        .map_err(|e| LoadError::object(id, None, e))?;
    let commit = object
        .peel_to_kind(gix::object::Kind::Commit)
        .map_err(|e| LoadError::NotACommit {
            rev: rev.to_owned(),
            message: e.to_string(),
        })?;
    Ok(commit.id)
}

impl Snapshot {
    /// Loads and validates the commit `rev` names.
    pub fn load(
        repo: &gix::Repository,
        rev: &str,
        options: &LoadOptions,
    ) -> Result<Snapshot, LoadError> {
        let commit = resolve_commit(repo, rev)?;
        Snapshot::load_commit(repo, commit, options, None)
    }

    /// Loads and validates `commit`; with `previous` (a snapshot of the same folder, valid
    /// or the `partial` of a rejection), only the blobs the tree diff says changed are read.
    pub fn load_commit(
        repo: &gix::Repository,
        commit: ObjectId,
        options: &LoadOptions,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, LoadError> {
        let previous = previous.filter(|p| p.options == *options);
        let start = std::time::Instant::now();
        let c = repo
            .find_commit(commit)
            .map_err(|e| LoadError::object(commit, None, e))?;
        let root = c
            .tree_id()
            .map_err(|e| LoadError::object(commit, None, e))?
            .detach();
        let tree = subtree(repo, root, &options.path)
            .map_err(|e| e.with_path_hint(&options.path))?
            .ok_or_else(|| LoadError::PathNotFound {
                path: options.path.clone(),
                commit,
            })?;
        let mut walk = Walk {
            repo,
            previous,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            to_read: Vec::new(),
        };
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1000.0;
        let mut stats = LoadStats::default();
        let t = std::time::Instant::now();
        walk.dir(&options.path, tree)?;
        stats.walk_ms = ms(t);
        let Walk {
            mut files,
            dirs,
            to_read,
            ..
        } = walk;

        // Read the changed blobs (size first: a huge file is an error, not a read).
        let t = std::time::Instant::now();
        let mut blobs: Vec<(String, Result<Vec<u8>, ValidationError>)> =
            Vec::with_capacity(to_read.len());
        for (path, id) in &to_read {
            let header = repo
                .find_header(*id)
                .map_err(|e| LoadError::object(*id, Some(path), e))?;
            let size = header.size();
            if size > options.max_file_bytes {
                blobs.push((
                    path.clone(),
                    Err(ValidationError {
                        path: path.clone(),
                        line: 1,
                        column: 1,
                        field: String::new(),
                        message: format!(
                            "file is {} ({size} bytes); kommit reads manifest files up to {}",
                            human_bytes(size),
                            human_bytes(options.max_file_bytes)
                        ),
                    }),
                ));
                continue;
            }
            let blob = repo
                .find_blob(*id)
                .map_err(|e| LoadError::object(*id, Some(path), e))?;
            blobs.push((path.clone(), Ok(blob.data.clone())));
        }
        stats.read_ms = ms(t);
        let t = std::time::Instant::now();
        let pending: BTreeSet<String> = to_read.iter().map(|(p, _)| p.clone()).collect();
        let last = last_commits(repo, commit, &options.path, pending)?;
        stats.history_ms = ms(t);
        let t = std::time::Instant::now();
        let parsed = parse_parallel(blobs, &last, commit);
        for ((path, parsed), (_, id)) in parsed.into_iter().zip(&to_read) {
            files.insert(
                path,
                Arc::new(FileEntry {
                    blob: Some(*id),
                    objects: parsed.objects.into_iter().map(Arc::new).collect(),
                    errors: parsed.errors,
                }),
            );
        }

        stats.parse_ms = ms(t);
        let t = std::time::Instant::now();
        // Assemble: duplicates, then the checks across objects. With a previous snapshot
        // free of duplicates, its map is reused and only the changed files' objects are
        // taken out and put in.
        let mut errors: Vec<ValidationError> = files
            .values()
            .flat_map(|f| f.errors.iter().cloned())
            .collect();
        let objects = match previous.filter(|p| !p.has_duplicates) {
            Some(prev) => assemble_delta(prev, &files),
            None => None,
        };
        let (objects, has_duplicates) = match objects {
            Some(o) => (o, false),
            None => assemble_full(&files, &mut errors),
        };
        let assemble_ms = ms(t);
        let t_cross = std::time::Instant::now();
        errors.extend(crate::cross::check_all(&objects));
        errors.extend(crate::cross::service_addresses(
            &objects,
            &options.service_cidr,
        ));
        debug!(assemble_ms, cross_ms = ms(t_cross), "checks across objects");

        errors.sort();
        crate::parse::dedup(&mut errors);
        stats.validate_ms = ms(t);
        stats.blobs_read = to_read.len();
        stats.total_ms = ms(start);
        let snapshot = Snapshot {
            commit,
            tree,
            path: options.path.clone(),
            objects,
            files,
            dirs,
            options: options.clone(),
            stats,
            has_duplicates,
        };
        debug!(
            commit = %commit,
            objects = snapshot.objects.len(),
            read = stats.blobs_read,
            errors = errors.len(),
            elapsed_ms = stats.total_ms,
            "loaded desired state"
        );
        if errors.is_empty() {
            Ok(snapshot)
        } else {
            Err(LoadError::Rejected(Box::new(Rejection {
                commit,
                errors,
                partial: Box::new(snapshot),
            })))
        }
    }

    /// The files read (manifest paths), in order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<&DesiredObject> {
        self.objects.get(key).map(|o| o.as_ref())
    }

    /// How many blobs this load read (the others were carried over from the previous
    /// snapshot because their tree entries did not change).
    pub fn blobs_read(&self) -> usize {
        self.stats.blobs_read
    }

    /// Timings of the load that made this snapshot.
    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    /// The options the snapshot was loaded with.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }
}

fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else if n >= 1024 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

impl LoadError {
    fn with_path_hint(self, path: &str) -> LoadError {
        match self {
            LoadError::Object {
                id,
                path: None,
                message,
            } => LoadError::Object {
                id,
                path: Some(if path.is_empty() {
                    "/".to_owned()
                } else {
                    path.to_owned()
                }),
                message,
            },
            other => other,
        }
    }
}

/// The tree at `path` under `root` (None when there is no folder there).
fn subtree(
    repo: &gix::Repository,
    root: ObjectId,
    path: &str,
) -> Result<Option<ObjectId>, LoadError> {
    if path.is_empty() {
        return Ok(Some(root));
    }
    let tree = repo
        .find_tree(root)
        .map_err(|e| LoadError::object(root, None, e))?;
    let entry = tree
        .lookup_entry_by_path(path)
        .map_err(|e| LoadError::object(root, Some(path), e))?;
    Ok(entry.filter(|e| e.mode().is_tree()).map(|e| e.object_id()))
}

fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The range of keys under `dir/` in a map keyed by paths.
fn under<'a, V>(
    map: &'a BTreeMap<String, V>,
    dir: &str,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    let (lo, hi) = if dir.is_empty() {
        (String::new(), None)
    } else {
        (format!("{dir}/"), Some(format!("{dir}0")))
    };
    map.range(lo..)
        .take_while(move |(k, _)| hi.as_ref().is_none_or(|h| *k < h))
}

struct Walk<'a> {
    repo: &'a gix::Repository,
    previous: Option<&'a Snapshot>,
    files: BTreeMap<String, Arc<FileEntry>>,
    dirs: BTreeMap<String, ObjectId>,
    to_read: Vec<(String, ObjectId)>,
}

impl Walk<'_> {
    fn entry_error(&mut self, path: String, message: String) {
        self.files.insert(
            path.clone(),
            Arc::new(FileEntry {
                blob: None,
                objects: Vec::new(),
                errors: vec![ValidationError {
                    path,
                    line: 1,
                    column: 1,
                    field: String::new(),
                    message,
                }],
            }),
        );
    }

    fn dir(&mut self, dir: &str, tree: ObjectId) -> Result<(), LoadError> {
        self.dirs.insert(dir.to_owned(), tree);
        if let Some(prev) = self.previous
            && prev.dirs.get(dir) == Some(&tree)
        {
            // Same tree as before: everything under it is unchanged.
            for (k, v) in under(&prev.files, dir) {
                self.files.insert(k.clone(), v.clone());
            }
            for (k, v) in under(&prev.dirs, dir) {
                self.dirs.insert(k.clone(), *v);
            }
            return Ok(());
        }
        let shown = if dir.is_empty() { "/" } else { dir };
        let t = self
            .repo
            .find_tree(tree)
            .map_err(|e| LoadError::object(tree, Some(shown), e))?;
        let mut entries = Vec::new();
        for e in t.iter() {
            let e = e.map_err(|e| LoadError::object(tree, Some(shown), e))?;
            entries.push((e.filename().to_string(), e.mode(), e.oid().to_owned()));
        }
        for (name, mode, id) in entries {
            if name.starts_with('.') {
                continue;
            }
            let path = join_path(dir, &name);
            if mode.is_tree() {
                self.dir(&path, id)?;
            } else if mode.is_commit() {
                self.entry_error(
                    path,
                    "submodule: kommit does not load submodules; commit the manifests into this repository (or load a folder without it with --path)".to_owned(),
                );
            } else if mode.is_link() {
                if is_manifest_name(&name) || !name.contains('.') {
                    self.entry_error(
                        path,
                        "symlink: kommit reads manifests from Git objects and does not follow symlinks; commit the file itself".to_owned(),
                    );
                }
            } else if is_manifest_name(&name) {
                match self.previous.and_then(|p| p.files.get(&path)) {
                    Some(f) if f.blob == Some(id) => {
                        self.files.insert(path, f.clone());
                    }
                    _ => self.to_read.push((path, id)),
                }
            }
        }
        Ok(())
    }
}

type BlobToParse = (String, Result<Vec<u8>, ValidationError>);

fn parse_parallel(
    blobs: Vec<(String, Result<Vec<u8>, ValidationError>)>,
    last: &HashMap<String, ObjectId>,
    commit: ObjectId,
) -> Vec<(String, ParsedFile)> {
    let one = |(path, data): (String, Result<Vec<u8>, ValidationError>)| {
        let parsed = match data {
            Ok(bytes) => parse_file(&path, &bytes, last.get(&path).copied().unwrap_or(commit)),
            Err(e) => ParsedFile {
                objects: Vec::new(),
                errors: vec![e],
            },
        };
        (path, parsed)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if blobs.len() < 4 || threads == 1 {
        return blobs.into_iter().map(one).collect();
    }
    // Contiguous chunks keep the output in input order.
    let total: usize = blobs
        .iter()
        .map(|(_, b)| b.as_ref().map_or(0, Vec::len))
        .sum();
    let per = total / threads + 1;
    let mut chunks: Vec<Vec<BlobToParse>> = vec![Vec::new()];
    let mut size = 0;
    for b in blobs {
        let len = b.1.as_ref().map_or(0, Vec::len);
        if size + len > per && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(c) = chunks.last_mut() {
            c.push(b);
        }
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.into_iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// For each path, the commit that last changed it, walking first parents from `head`.
fn last_commits(
    repo: &gix::Repository,
    head: ObjectId,
    sub: &str,
    mut pending: BTreeSet<String>,
) -> Result<HashMap<String, ObjectId>, LoadError> {
    let mut out = HashMap::new();
    let mut cur = head;
    let mut cur_tree = {
        let c = repo
            .find_commit(cur)
            .map_err(|e| LoadError::object(cur, None, e))?;
        let root = c
            .tree_id()
            .map_err(|e| LoadError::object(cur, None, e))?
            .detach();
        subtree(repo, root, sub)?
    };
    while !pending.is_empty() {
        let parent = repo
            .find_commit(cur)
            .ok()
            .and_then(|c| c.parent_ids().next().map(|p| p.detach()));
        // A shallow or incomplete history ends the walk: what is left was changed here.
        let parent_tree = parent.and_then(|p| {
            let c = repo.find_commit(p).ok()?;
            let root = c.tree_id().ok()?.detach();
            Some(subtree(repo, root, sub).ok().flatten())
        });
        let Some(parent_tree) = parent_tree else {
            for p in std::mem::take(&mut pending) {
                out.insert(p, cur);
            }
            break;
        };
        if cur_tree != parent_tree {
            let mut changed = Vec::new();
            diff_trees(repo, cur_tree, parent_tree, sub, &pending, &mut changed);
            for p in changed {
                pending.remove(&p);
                out.insert(p, cur);
            }
        }
        let Some(p) = parent else { break };
        cur = p;
        cur_tree = parent_tree;
    }
    Ok(out)
}

fn tree_entries(
    repo: &gix::Repository,
    id: Option<ObjectId>,
) -> BTreeMap<String, (bool, ObjectId)> {
    let mut out = BTreeMap::new();
    let Some(id) = id else { return out };
    let Ok(t) = repo.find_tree(id) else {
        return out;
    };
    for e in t.iter().flatten() {
        out.insert(
            e.filename().to_string(),
            (e.mode().is_tree(), e.oid().to_owned()),
        );
    }
    out
}

/// Paths in `pending` whose entry differs between two trees of the folder `dir`.
fn diff_trees(
    repo: &gix::Repository,
    a: Option<ObjectId>,
    b: Option<ObjectId>,
    dir: &str,
    pending: &BTreeSet<String>,
    changed: &mut Vec<String>,
) {
    let ea = tree_entries(repo, a);
    let eb = tree_entries(repo, b);
    let names: BTreeSet<&String> = ea.keys().chain(eb.keys()).collect();
    for name in names {
        let (x, y) = (ea.get(name), eb.get(name));
        if x == y {
            continue;
        }
        let path = join_path(dir, name);
        let x_tree = x.filter(|(t, _)| *t).map(|(_, id)| *id);
        let y_tree = y.filter(|(t, _)| *t).map(|(_, id)| *id);
        let dir_prefix = format!("{path}/");
        let pending_under = pending
            .range(dir_prefix.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&dir_prefix));
        if (x_tree.is_some() || y_tree.is_some()) && pending_under {
            diff_trees(repo, x_tree, y_tree, &path, pending, changed);
        }
        if pending.contains(&path) {
            changed.push(path);
        }
    }
}
