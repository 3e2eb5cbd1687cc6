//! What `cargo xtask e2e --filter` selects: an assertion group, or the
//! tests whose names hold a word. Its own module because both `e2e` (which
//! runs the suite) and `suite` (which builds and runs its binaries) read
//! it, and neither may import the other back.

use anyhow::Result;

/// What `--filter` selects: an assertion group by name (the e2e crate's
/// `[[test]]` target, its file and its recorded group share it), else the
/// tests whose names hold the word, as `cargo test` filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    All,
    Group(String),
    Names(String),
}

impl Selection {
    pub(crate) fn new(filter: Option<&str>) -> Result<Self> {
        let Some(word) = filter else {
            return Ok(Selection::All);
        };
        let tests = rig::base::paths::workspace_root().join("tests");
        let is_group = crate::scenarios::assertion_groups(&tests)?
            .iter()
            .any(|g| g.name == word);
        Ok(if is_group {
            Selection::Group(word.to_owned())
        } else {
            Selection::Names(word.to_owned())
        })
    }

    /// cargo's arguments before `--`: the group's test target.
    pub(crate) fn cargo_args(&self) -> Vec<String> {
        match self {
            Selection::Group(group) => vec!["--test".into(), group.clone()],
            _ => Vec::new(),
        }
    }

    /// The test binaries' name filter.
    pub(crate) fn name_filter(&self) -> Option<&str> {
        match self {
            Selection::Names(word) => Some(word),
            _ => None,
        }
    }
}
