//! Scopes (`repository:team-a/app:pull,push`, `registry:catalog:*`), actions and what a
//! role or an anonymous-pull pattern allows.

use crate::meta::records::{Grant, Role};
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

pub use crate::meta::patterns::pattern_matches;

/// Names of the built-in scope maps: the roles. Custom scope maps may not take them.
pub const BUILTIN_SCOPE_MAPS: [&str; 3] = ["reader", "writer", "admin"];

/// Parses `PATTERN:ACTIONS` (`team-a/*:pull,push`, `*:*`) into a grant. The pattern is
/// `*`, a repository name, or a repository name prefix followed by `/*`.
pub fn parse_grant(text: &str) -> Result<Grant, String> {
    let (pattern, actions) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("grant {text:?}: expected PATTERN:ACTIONS, e.g. team-a/*:pull,push"))?;
    if !crate::registry::names::is_repository_pattern(pattern) {
        return Err(format!("grant {text:?}: {pattern:?} is not `*`, a repository name or NAME/*"));
    }
    let actions: Vec<String> = actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect();
    if actions.is_empty() || actions.iter().any(|a| a != "*" && Action::parse(a).is_none()) {
        return Err(format!("grant {text:?}: actions are pull, push, delete or *"));
    }
    Ok(Grant { pattern: pattern.to_string(), actions })
}

/// Whether `grants` allow `action` on `repo`.
pub fn grants_allow(grants: &[Grant], repo: &str, action: Action) -> bool {
    grants.iter().any(|g| {
        pattern_matches(&g.pattern, repo) && g.actions.iter().any(|a| a == "*" || a == action.as_str())
    })
}

/// The grants a role stands for.
pub fn role_grants(role: Role) -> Vec<Grant> {
    let actions: &[&str] = match role {
        Role::Reader => &["pull"],
        Role::Writer => &["pull", "push"],
        Role::Admin => &["*"],
    };
    vec![Grant { pattern: "*".into(), actions: actions.iter().map(|a| a.to_string()).collect() }]
}

/// The `scope` a challenge names for a request that needs `actions` on `repo`: every
/// action the request needs, so one token covers it (`pull,push` for an upload, as CNCF
/// Distribution asks).
pub fn challenge_scope(repo: &str, actions: &[Action]) -> String {
    let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    format!("repository:{repo}:{}", actions.join(","))
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
    fn grants() {
        let g = parse_grant("team-a/*:pull,push").unwrap();
        assert!(grants_allow(&[g.clone()], "team-a/app", Action::Push));
        assert!(!grants_allow(&[g.clone()], "team-a/app", Action::Delete));
        assert!(!grants_allow(&[g], "team-b/app", Action::Pull));
        assert!(grants_allow(&[parse_grant("*:*").unwrap()], "x/y", Action::Delete));
        assert!(parse_grant("team-a/*").is_err());
        assert!(parse_grant("team-a/*:fly").is_err());
        assert!(parse_grant("../x:pull").is_err());
        assert!(parse_grant("Team/*:pull").is_err());
        assert!(grants_allow(&role_grants(Role::Writer), "a", Action::Push));
        assert!(!grants_allow(&role_grants(Role::Reader), "a", Action::Push));
    }

    #[test]
    fn challenges_name_every_needed_action() {
        assert_eq!(challenge_scope("a/b", &[Action::Pull]), "repository:a/b:pull");
        assert_eq!(challenge_scope("a/b", &[Action::Pull, Action::Push]), "repository:a/b:pull,push");
        assert_eq!(challenge_scope("a/b", &[Action::Delete]), "repository:a/b:delete");
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
