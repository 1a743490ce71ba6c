//! Scopes (`repository:team-a/app:pull,push`, `registry:catalog:*`), actions and what a
//! role or an anonymous-pull pattern allows.

use crate::meta::records::Role;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// One entry of a token's `access` claim (docker-token-jwt.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// A requested scope, as parsed from `/token?scope=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedScope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Parses one `scope` value: space-separated `type:name:actions` entries. The name may
/// itself contain colons (`repository:host:5000/app:pull`), so type is up to the first
/// colon and actions after the last. Malformed entries are skipped (the spec asks the
/// token server to grant what it can, not to fail).
pub fn parse_scope(value: &str) -> Vec<RequestedScope> {
    value
        .split(' ')
        .filter_map(|entry| {
            let (kind, rest) = entry.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            if kind.is_empty() || name.is_empty() {
                return None;
            }
            let actions = actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect();
            Some(RequestedScope { kind: kind.to_string(), name: name.to_string(), actions })
        })
        .collect()
}

/// Whether a repository pattern covers `name`: `*` everything, `team-a/*` everything
/// below `team-a/` (at any depth), otherwise the exact name.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('/') => name.starts_with(prefix) && name.len() > prefix.len(),
        _ => pattern == name,
    }
}

/// What a role allows on any repository.
pub fn role_allows(role: Role, action: Action) -> bool {
    match role {
        Role::Reader => action == Action::Pull,
        Role::Writer => matches!(action, Action::Pull | Action::Push),
        Role::Admin => true,
    }
}

/// The `scope` a challenge names for `action` on `repo`: pushing clients ask for pull
/// too, as docker does.
pub fn challenge_scope(repo: &str, action: Action) -> String {
    match action {
        Action::Pull => format!("repository:{repo}:pull"),
        Action::Push => format!("repository:{repo}:pull,push"),
        Action::Delete => format!("repository:{repo}:delete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        let s = parse_scope("repository:team-a/app:pull,push registry:catalog:* repository:h:5000/x:pull bogus");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "team-a/app");
        assert_eq!(s[0].actions, vec!["pull", "push"]);
        assert_eq!(s[1].kind, "registry");
        assert_eq!(s[2].name, "h:5000/x");
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "a/b"));
        assert!(pattern_matches("team-a/*", "team-a/app"));
        assert!(pattern_matches("team-a/*", "team-a/x/y"));
        assert!(!pattern_matches("team-a/*", "team-a"));
        assert!(!pattern_matches("team-a/*", "team-ab/app"));
        assert!(pattern_matches("team-a/app", "team-a/app"));
        assert!(!pattern_matches("team-a/app", "team-a/app2"));
    }
}
