//! The distribution spec's grammar for repository names, tags and references.

use super::errors::RegistryError;
use meridian_replication::Digest;
use once_cell::sync::Lazy;
use regex::Regex;

static NAME: Lazy<Regex> = Lazy::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").expect("static regex")
});
static TAG: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("static regex"));

/// Longest accepted repository name (clients cap `host/name` at 255 characters).
const MAX_NAME_LEN: usize = 255;

pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    if name.len() > MAX_NAME_LEN || !NAME.is_match(name) {
        return Err(RegistryError::NameInvalid(name.chars().take(300).collect()));
    }
    Ok(())
}

pub fn validate_tag(tag: &str) -> Result<(), RegistryError> {
    if !TAG.is_match(tag) {
        return Err(RegistryError::TagInvalid(tag.chars().take(200).collect()));
    }
    Ok(())
}

pub fn parse_digest(s: &str) -> Result<Digest, RegistryError> {
    Digest::parse(s).map_err(|e| RegistryError::DigestInvalid(format!("{}: {e}", s.chars().take(200).collect::<String>())))
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        if s.contains(':') {
            Ok(Reference::Digest(parse_digest(s)?))
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/ubuntu", "a-b/c.d/e__f", "a--b", "x0/y1/z2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a_", "a___b", "a/.b", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        assert!(validate_tag("v1.0_rc-2").is_ok());
        assert!(validate_tag("_x").is_ok());
        assert!(validate_tag("-x").is_err());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag(&"a".repeat(128)).is_ok());
        assert!(validate_tag(&"a".repeat(129)).is_err());
    }
}

/// A repository pattern (`*`, `NAME/*` or a repository name), as grants, quotas and
/// retention policies take them; `meta::patterns` says what each covers.
pub fn is_repository_pattern(pattern: &str) -> bool {
    let base = pattern.strip_suffix("/*").unwrap_or(pattern);
    pattern == "*" || validate_name(base).is_ok()
}
