//! Blob grants: what lets a client follow a nearest-region redirect without its token.
//!
//! A redirect to another region's URL is to another host, and HTTP clients do not carry
//! credentials across hosts: Go's client (skopeo, containerd, podman) copies
//! `Authorization` only to the same host and port or a subdomain, and Docker's authorizer
//! only to the registry it logged in to. So the redirect URL carries a grant, as an S3
//! pre-signed URL does: a token signed with the cluster's key (every region verifies it
//! from the shared state) that lets its holder read one blob of one repository, for
//! `GRANT_TTL_SECS`, as the caller it was issued to (a removed user's or revoked robot's
//! grant stops working like its tokens). It is accepted only as `?grant=` on that blob's
//! `GET`/`HEAD`, never as a bearer token. The client's own token works at the target too.

use super::jwt;
use super::password::random_secret;
use super::scope::AccessEntry;
use super::{now_unix, Auth, AuthError, Caller};

/// How long a redirect stays usable: long enough to start the download (a transfer that
/// has started is not cut off when it passes), short enough that a logged URL is stale.
pub const GRANT_TTL_SECS: u64 = 300;

/// The query parameter carrying the grant.
pub const GRANT_PARAM: &str = "grant";

/// The `aud` of grants issued by the token service named `service`.
pub fn grant_audience(service: &str) -> String {
    format!("{service}/blob")
}

impl Auth {
    /// A grant for `caller` to read `digest` from `repo` (`None` when there is nobody to
    /// grant for: auth off, or an anonymous caller, who needs none).
    pub fn blob_grant(&self, caller: &Caller, repo: &str, digest: &str) -> Option<String> {
        let (Caller::Identity(identity) | Caller::Token { identity, .. }) = caller else { return None };
        let keys = self.store.signing_keys().ok()?;
        let key = keys.last()?;
        let now = now_unix();
        let claims = jwt::Claims {
            iss: self.cfg.service.clone(),
            sub: identity.subject.clone(),
            // An audience of its own: a verifier that knows no `blob` claim (an older
            // node) refuses the grant instead of taking it for a repository-wide token.
            aud: grant_audience(&self.cfg.service),
            exp: now + GRANT_TTL_SECS,
            nbf: now,
            iat: now,
            jti: random_secret(12),
            sid: identity.secret_id.clone(),
            access: vec![AccessEntry { kind: "repository".into(), name: repo.to_string(), actions: vec!["pull".into()] }],
            blob: Some(digest.to_string()),
        };
        jwt::sign(&claims, key)
    }

    /// The caller a grant was issued to, when it is valid for `digest` (and, through its
    /// access entry, for the repository the request names — `authorize` checks that).
    pub fn identify_grant(&self, grant: &str, digest: &str, host: Option<&str>) -> Result<Caller, AuthError> {
        if !self.enabled() {
            return Ok(Caller::Open);
        }
        self.verify_claims(grant, Some(digest))
            .map(|(caller, _)| caller)
            .ok_or_else(|| AuthError::Unauthorized { challenge: self.challenge(host, None, false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Action, Identity, Need};
    use crate::config::AuthConfig;

    #[test]
    fn a_grant_reads_one_blob_of_one_repository_and_is_no_bearer_token() {
        let (_dir, store, _key) = crate::auth::tests::store_with_key();
        let auth = Auth::new(AuthConfig::default(), store, false);
        let caller = Caller::Identity(Identity { subject: "ops".into(), secret_id: None, grants: Vec::new() });
        let grant = auth.blob_grant(&caller, "a/b", "sha256:aa").expect("a grant");
        let granted = auth.identify_grant(&grant, "sha256:aa", None).unwrap();
        assert!(auth.allows(&granted, Need::Repo { name: "a/b", actions: &[Action::Pull] }));
        assert!(!auth.allows(&granted, Need::Repo { name: "a/c", actions: &[Action::Pull] }), "another repository");
        assert!(!auth.allows(&granted, Need::Repo { name: "a/b", actions: &[Action::Push] }), "push");
        assert!(auth.identify_grant(&grant, "sha256:bb", None).is_err(), "another blob");
        assert!(auth.identify(Some(&format!("Bearer {grant}")), None, None).is_err(), "as a bearer token");
        assert!(auth.blob_grant(&Caller::Anonymous, "a/b", "sha256:aa").is_none());
        let gone = Caller::Identity(Identity { subject: "nobody".into(), secret_id: None, grants: Vec::new() });
        let orphan = auth.blob_grant(&gone, "a/b", "sha256:aa").unwrap();
        assert!(auth.identify_grant(&orphan, "sha256:aa", None).is_err(), "a grant of an identity that no longer exists");
    }
}
