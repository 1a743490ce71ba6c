//! Repository patterns, as grants, anonymous pulls, quotas and retention policies name
//! a set of repositories: `*`, `team-a/*` or one exact name.

/// Whether a repository pattern covers `name`: `*` everything, `team-a/*` everything
/// below `team-a/` (at any depth), otherwise the exact name.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('/') => name.starts_with(prefix) && name.len() > prefix.len(),
        _ => pattern == name,
    }
}
