//! Errors: validation errors (about the commit's content) and load errors (about the
//! repository or the request).

use std::fmt;

use serde::Serialize;

/// One problem in a commit's manifests, positioned in a file.
///
/// Displayed as `path:line:column: field.path: message` (without `field.path: ` when the
/// problem is about the file as a whole). Ordered by path, line, column, field, message:
/// the order in which a commit's errors are reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ValidationError {
    /// File path in the repository.
    pub path: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// Field path inside the object (`spec.template.spec.containers[0].image`); empty for
    /// a problem with the file itself.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A commit that failed validation. Nothing of it may be applied.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The rejected commit.
    pub commit: gix::ObjectId,
    /// Every error, sorted.
    pub errors: Vec<ValidationError>,
    /// What could be read of the commit (objects that parsed), for plans and for loading
    /// the next commit incrementally. Never apply it.
    pub partial: Box<crate::Snapshot>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "commit {} rejected: {} error{}",
            self.commit,
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The commit was read and is invalid: every error is in the rejection.
    #[error("{}", .0)]
    Rejected(Box<Rejection>),
    /// The directory is not a Git repository (or cannot be opened).
    #[error("cannot open Git repository {path}: {message}")]
    Open {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// The repository has no commit yet.
    #[error("the repository has no commits yet{}", .branch.as_ref().map(|b| format!(" (HEAD points to the unborn branch {b})")).unwrap_or_default())]
    EmptyRepository {
        /// The unborn branch HEAD names, if any.
        branch: Option<String>,
    },
    /// The revision names nothing in the repository.
    #[error("revision `{rev}` not found in the repository: {message}")]
    RevisionNotFound {
        /// The revision as given.
        rev: String,
        /// Details.
        message: String,
    },
    /// The revision names an object that is not a commit (or a tag of one).
    #[error("revision `{rev}` is not a commit: {message}")]
    NotACommit {
        /// The revision as given.
        rev: String,
        /// Details.
        message: String,
    },
    /// The manifest folder does not exist at that commit (or is not a folder).
    #[error("`{path}` is not a folder at commit {commit}")]
    PathNotFound {
        /// The sub-path.
        path: String,
        /// The commit.
        commit: gix::ObjectId,
    },
    /// An object the commit needs is missing from the repository or cannot be decoded.
    #[error("object {id}{} is missing or corrupt: {message}", .path.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
    Object {
        /// Object id.
        id: gix::ObjectId,
        /// File or folder it stands for, when known.
        path: Option<String>,
        /// Details from Git.
        message: String,
    },
    /// Another repository error.
    #[error("{0}")]
    Repository(String),
}

impl LoadError {
    /// The rejection, when the commit itself is invalid.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            LoadError::Rejected(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn object(id: gix::ObjectId, path: Option<&str>, e: impl fmt::Display) -> LoadError {
        LoadError::Object {
            id,
            path: path.map(str::to_owned),
            message: e.to_string(),
        }
    }
}
