//! What listing a dataset's folder or tar finds, before it is arranged into classes and samples.

/// A file found while listing a dataset: path components below the root, and for a tar member
/// where its bytes lie.
pub(super) struct Found {
    pub(super) parts: Vec<String>,
    pub(super) offset: u64,
    pub(super) size: u64,
}

/// What listing a dataset found: files (with where a tar member's bytes lie), folders, and the
/// entries that cannot be read as files, each with the reason.
#[derive(Default)]
pub(super) struct Listing {
    pub(super) files: Vec<Found>,
    pub(super) dirs: Vec<Vec<String>>,
    /// (path below the root, lossily if not UTF-8; why it is not read).
    pub(super) unreadable: Vec<(String, String)>,
}

/// Whether a listed file counts as an image: `*.jpg`, `*.jpeg` or `*.png` (any case), nothing
/// hidden on its path.
pub(super) fn is_image(parts: &[String]) -> bool {
    let Some(name) = parts.last() else {
        return false;
    };
    if parts.iter().any(|p| p.starts_with('.')) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// Up to three names from a list, for messages.
pub(super) fn examples(names: &[String]) -> String {
    let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        format!("{shown}, ...")
    } else {
        shown
    }
}
