//! Who may do what. Identities (users) and token-signing keys are Raft state, so every
//! region authenticates locally and a revocation applies wherever its entry is applied.
//! Clients follow the Docker token flow: a `401` challenge names `/token`, which takes
//! basic credentials and returns a signed bearer token holding the granted part of the
//! requested scopes. Basic credentials are also accepted directly on `/v2/` routes.
//!
//! Verified tokens and passwords are cached per *auth epoch* (bumped by every applied
//! identity or key change), so the hot path is a hash-map lookup and a revocation is
//! honoured by the very next request after its entry is applied.

pub mod blob_grant;
pub mod bootstrap;
pub mod jwt;
pub mod limits;
pub mod password;
pub mod scope;
mod scope_refusals;

use crate::config::AuthConfig;
use crate::meta::records::{Grant, Role};
use crate::meta::Store;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use scope::{challenge_scope, grants_allow, pattern_matches, role_grants, AccessEntry, Action, RequestedScope};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Robot tokens log in as `robot$<name>`.
pub const ROBOT_PREFIX: &str = "robot$";

/// How a robot secret is stored: hex SHA-256 (secrets are long and random).
pub fn robot_secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Cached verifications kept at most (then the cache starts over).
const CACHE_LIMIT: usize = 10_000;
/// Clock skew tolerated on `nbf`.
const LEEWAY_SECS: u64 = 30;

/// What a request needs.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// `/v2/`: any authenticated identity.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// Every one of `actions` on repository `name` (an upload needs `pull` and `push`).
    Repo { name: &'a str, actions: &'a [Action] },
}

/// Who is calling, with what it may do right now.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// Auth is off: everything is allowed.
    Open,
    /// Basic credentials of a user or robot token: its grants apply directly.
    Identity(Identity),
    /// A bearer token: its access entries, cut down to what its subject may still do.
    /// `token_id` is its `jti`.
    Token { identity: Identity, access: Vec<AccessEntry>, token_id: String },
}

impl Caller {
    /// The identity's login name, when there is one.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Caller::Identity(i) | Caller::Token { identity: i, .. } => Some(&i.subject),
            Caller::Anonymous | Caller::Open => None,
        }
    }
}

/// A user or robot token and what it may do now (its role's or scope map's grants).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The login name: a user name, or `robot$<name>`.
    pub subject: String,
    /// The robot secret it logged in with (robots only); tokens carry it as `sid`.
    pub secret_id: Option<String>,
    pub grants: Vec<Grant>,
}

impl Identity {
    fn allows(&self, need: Need<'_>) -> bool {
        match need {
            Need::Base => true,
            Need::Catalog => self.is_admin(),
            Need::Repo { name, actions } => actions.iter().all(|&a| grants_allow(&self.grants, name, a)),
        }
    }

    /// Everything on every repository (the `registry:catalog:*` scope).
    fn is_admin(&self) -> bool {
        self.grants.iter().any(|g| g.pattern == "*" && g.actions.iter().any(|a| a == "*"))
    }

    fn allows_entry(&self, kind: &str, name: &str, action: &str) -> bool {
        match (kind, Action::parse(action)) {
            ("repository", Some(a)) => grants_allow(&self.grants, name, a),
            ("registry", None) => name == "catalog" && action == "*" && self.is_admin(),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: a `401` with a challenge naming `/token`.
    #[error("authentication required")]
    Unauthorized { challenge: String },
    /// A token that lacks the scope while its identity could get it: `401` with a
    /// challenge carrying `error="insufficient_scope"` and the scope, as CNCF Distribution
    /// answers (the Go clients of docker, containerd and podman fetch a new token only on
    /// a 401).
    #[error("the token does not cover this request; fetch a token for the scope in the challenge")]
    InsufficientScope { challenge: String },
    /// The same token presented again for the same scope right after that 401: `403` with
    /// the same challenge (RFC 6750 §3.1's status for insufficient scope). A client that
    /// repeats a token it was told is insufficient did not take the 401 as "fetch a new
    /// token"; the Python oras client takes a 403 that way.
    #[error("the token still does not cover this request; fetch a token for the scope in the challenge")]
    InsufficientScopeRepeated { challenge: String },
    /// The identity may not do this: `403 DENIED`.
    #[error("requested access to the resource is denied")]
    Denied,
    /// `/token` with wrong basic credentials.
    #[error("invalid username or password")]
    BadCredentials,
    #[error("too many failed logins; retry in {0} s")]
    TooManyRequests(u64),
    #[error("invalid token request: {0}")]
    BadRequest(String),
    /// The cluster has not created its signing key yet.
    #[error("not ready to issue tokens: {0}")]
    NotReady(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AuthError> for crate::registry::RegistryError {
    fn from(e: AuthError) -> Self {
        use crate::registry::RegistryError as R;
        let message = e.to_string();
        match e {
            AuthError::Unauthorized { challenge } => R::Unauthorized { challenge, message },
            AuthError::InsufficientScope { challenge } => R::Unauthorized { challenge, message },
            AuthError::InsufficientScopeRepeated { challenge } => R::Denied { challenge: Some(challenge) },
            AuthError::BadCredentials => {
                R::Unauthorized { challenge: "Basic realm=\"meridian\"".to_string(), message }
            }
            AuthError::Denied => R::Denied { challenge: None },
            AuthError::TooManyRequests(secs) => R::TooManyRequests { retry_after: secs, message },
            AuthError::BadRequest(m) => R::Unsupported(m),
            AuthError::NotReady(m) => R::NoQuorum(m),
            AuthError::Internal(m) => R::Internal(m),
        }
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Clone)]
struct Cached {
    epoch: u64,
    caller: Caller,
    /// The caller stops being valid at this time (token expiry; basic: never).
    until: u64,
}

pub struct Auth {
    cfg: AuthConfig,
    /// The registry serves HTTPS: challenges name an https realm.
    tls: bool,
    store: Store,
    logins: limits::LoginGuard,
    tokens: Mutex<HashMap<String, Cached>>,
    /// sha256("user\0password") → the user, so a password is hashed with argon2 once per epoch.
    basics: Mutex<HashMap<[u8; 32], Cached>>,
    /// Tokens recently answered `401 insufficient_scope`, per scope.
    scope_refusals: scope_refusals::ScopeRefusals,
    /// Set once this node has applied a signing key and a user: logins can succeed.
    identities_seen: std::sync::atomic::AtomicBool,
}

/// A token issued by `/token`.
#[derive(Debug, serde::Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

impl Auth {
    pub fn new(cfg: AuthConfig, store: Store, tls: bool) -> Arc<Auth> {
        let logins = limits::LoginGuard::new(cfg.failed_login_limit);
        Arc::new(Auth {
            cfg,
            tls,
            store,
            logins,
            tokens: Mutex::default(),
            basics: Mutex::default(),
            scope_refusals: scope_refusals::ScopeRefusals::default(),
            identities_seen: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Whether this node has applied the cluster's token-signing key and a user, i.e. can
    /// check a login. Latched: once true it stays true (only the first start waits).
    pub fn identities_present(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.identities_seen.load(Ordering::Acquire) {
            return true;
        }
        let present = self.store.has_identities().unwrap_or(false);
        if present {
            self.identities_seen.store(true, Ordering::Release);
        }
        present
    }

    /// On a cluster's first start the leader creates the signing key and the `admin` user
    /// just after the first election; a client that logs in the moment the port opens must
    /// not get a 401 for a correct password. Requests that need identities wait for them
    /// here, up to `wait` (no wait at all once they have been seen, or with auth off).
    pub async fn wait_for_identities(&self, wait: std::time::Duration) {
        if !self.cfg.enabled {
            return;
        }
        let deadline = tokio::time::Instant::now() + wait;
        while !self.identities_present() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Whether `authorization` names an identity this node has not heard of: a user or
    /// robot it has no record of, a robot secret it does not hold, a token signed with a
    /// key it lacks or for a subject it lacks. Such credentials may have been created in
    /// another region a moment ago, so the caller catches this node up with the leader
    /// before judging them (promise: what the cluster acknowledged works everywhere).
    /// Cheap: no argon2, so a wrong password for a known user is never "unheard of".
    pub fn names_unheard_identity(&self, authorization: &str) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        if let Some(token) = strip_scheme(authorization, "bearer") {
            let token = token.trim();
            if lock(&self.tokens).contains_key(token) {
                return false;
            }
            let Ok(keys) = self.store.signing_keys() else { return false };
            return match jwt::verify(token, &keys) {
                Err(e) => e == jwt::TokenError::UnknownKey,
                Ok(claims) => matches!(self.identity(&claims.sub, claims.sid.as_deref()), Ok(None)),
            };
        }
        match strip_scheme(authorization, "basic").and_then(|e| decode_basic(e.trim())) {
            Some((user, password)) => self.names_unheard_login(&user, &password),
            None => false,
        }
    }

    /// `names_unheard_identity` for a user name and password (a `/token` form's too).
    pub fn names_unheard_login(&self, user: &str, password: &str) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        match user.strip_prefix(ROBOT_PREFIX) {
            Some(robot) => match self.store.robot(robot) {
                Ok(Some(record)) => {
                    let hash = robot_secret_hash(password);
                    !record.secrets.iter().any(|s| s.sha256 == hash)
                }
                Ok(None) => true,
                Err(_) => false,
            },
            None => matches!(self.store.user(user), Ok(None)),
        }
    }

    pub fn service(&self) -> &str {
        &self.cfg.service
    }

    /// A console login: a registry user's name and password. Robot tokens are for
    /// machines: their names get the very answer a wrong password gets, and count as a
    /// failed login.
    pub fn console_login(&self, user: &str, password: &str, peer: Option<IpAddr>) -> Result<Caller, AuthError> {
        if user.starts_with(ROBOT_PREFIX) {
            self.logins.check(user, peer).map_err(AuthError::TooManyRequests)?;
            self.login_failed(user, peer);
            return Err(AuthError::BadCredentials);
        }
        self.verify_password(user, password, peer)
    }

    /// The caller a console session of user `name` acts as: the user's *current* role,
    /// `None` once the user is gone.
    pub fn user_caller(&self, name: &str) -> Option<Caller> {
        if name.starts_with(ROBOT_PREFIX) {
            return None;
        }
        let (identity, _) = self.identity(name, None).ok()??;
        Some(Caller::Identity(identity))
    }

    /// The token endpoint URL for challenges: configured, or this host's `/token`.
    fn realm(&self, host: Option<&str>) -> String {
        match (&self.cfg.realm, host) {
            (Some(realm), _) => realm.clone(),
            (None, Some(host)) => format!("{}://{host}/token", if self.tls { "https" } else { "http" }),
            (None, None) => "/token".to_string(),
        }
    }

    fn challenge(&self, host: Option<&str>, scope: Option<&str>, insufficient: bool) -> String {
        let mut c = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(host), self.cfg.service);
        if let Some(scope) = scope {
            c.push_str(&format!(",scope=\"{scope}\""));
        }
        if insufficient {
            c.push_str(",error=\"insufficient_scope\"");
        }
        c
    }

    fn anonymous_may_pull(&self, repo: &str) -> bool {
        self.cfg.anonymous_pull.iter().any(|p| pattern_matches(p, repo))
    }

    /// Identifies the caller from the `Authorization` header (anonymous without one).
    pub fn identify(&self, authorization: Option<&str>, host: Option<&str>, peer: Option<IpAddr>) -> Result<Caller, AuthError> {
        if !self.cfg.enabled {
            return Ok(Caller::Open);
        }
        let Some(value) = authorization else { return Ok(Caller::Anonymous) };
        let unauthorized = || AuthError::Unauthorized { challenge: self.challenge(host, None, false) };
        if let Some(token) = strip_scheme(value, "bearer") {
            return self.verify_token(token.trim()).ok_or_else(unauthorized);
        }
        if let Some(encoded) = strip_scheme(value, "basic") {
            let (user, pass) = decode_basic(encoded.trim()).ok_or_else(unauthorized)?;
            return self.verify_password(&user, &pass, peer).map_err(|e| match e {
                AuthError::BadCredentials => unauthorized(),
                other => other,
            });
        }
        Err(unauthorized())
    }

    /// Whether `caller` may do `need`; the error says how to answer otherwise. `method`
    /// and `path` name the request: a token refused for a scope is answered differently
    /// when it comes back with the very same request (`scope_refusals`).
    pub fn authorize(&self, caller: &Caller, need: Need<'_>, host: Option<&str>, method: &str, path: &str) -> Result<(), AuthError> {
        if self.allows(caller, need) {
            return Ok(());
        }
        let scope = match need {
            Need::Base => None,
            Need::Catalog => Some("registry:catalog:*".to_string()),
            Need::Repo { name, actions } => Some(challenge_scope(name, actions)),
        };
        match caller {
            Caller::Anonymous => Err(AuthError::Unauthorized { challenge: self.challenge(host, scope.as_deref(), false) }),
            Caller::Token { identity, token_id, .. } if identity.allows(need) => {
                let challenge = self.challenge(host, scope.as_deref(), true);
                let refused = format!("{} {method} {path}", scope.as_deref().unwrap_or_default());
                if self.scope_refusals.refused_before(token_id, &refused) {
                    Err(AuthError::InsufficientScopeRepeated { challenge })
                } else {
                    Err(AuthError::InsufficientScope { challenge })
                }
            }
            _ => Err(AuthError::Denied),
        }
    }

    /// Whether `caller` may do `need` (no error detail).
    pub fn allows(&self, caller: &Caller, need: Need<'_>) -> bool {
        match need {
            Need::Repo { name, actions } => actions.iter().all(|&action| self.allows_action(caller, name, action)),
            Need::Base => !matches!(caller, Caller::Anonymous),
            Need::Catalog => match caller {
                Caller::Open => true,
                Caller::Anonymous => false,
                Caller::Identity(identity) => identity.allows(need),
                Caller::Token { access, .. } => access.iter().any(|a| a.kind == "registry" && a.name == "catalog"),
            },
        }
    }

    /// Whether `caller` may do one `action` on `repo`.
    fn allows_action(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        if action == Action::Pull && self.anonymous_may_pull(repo) {
            return true;
        }
        match caller {
            Caller::Open => true,
            Caller::Anonymous => false,
            Caller::Identity(identity) => grants_allow(&identity.grants, repo, action),
            Caller::Token { access, .. } => access
                .iter()
                .any(|a| a.kind == "repository" && a.name == repo && a.actions.iter().any(|x| x == action.as_str())),
        }
    }

    /// Whether `caller` may pull `repo` (catalog and tag-list filtering): by its identity,
    /// not only by what its token holds, since listing needs no per-repository token.
    pub fn may_list(&self, caller: &Caller, repo: &str) -> bool {
        let need = Need::Repo { name: repo, actions: &[Action::Pull] };
        match caller {
            Caller::Token { identity, .. } => identity.allows(need) || self.allows(caller, need),
            _ => self.allows(caller, need),
        }
    }

    fn verify_token(&self, token: &str) -> Option<Caller> {
        let epoch = self.store.auth_epoch();
        let now = now_unix();
        if let Some(c) = lock(&self.tokens).get(token) {
            if c.epoch == epoch && now < c.until {
                return Some(c.caller.clone());
            }
        }
        let (caller, until) = self.verify_claims(token, None)?;
        let mut cache = lock(&self.tokens);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(token.to_string(), Cached { epoch, caller: caller.clone(), until });
        Some(caller)
    }

    /// A signed token's caller and until when it holds, uncached. `blob` must be the
    /// token's own `blob` claim: `None` for bearer tokens (a blob grant is refused there),
    /// the requested digest for a blob grant.
    fn verify_claims(&self, token: &str, blob: Option<&str>) -> Option<(Caller, u64)> {
        let now = now_unix();
        let keys = self.store.signing_keys().ok()?;
        let claims = jwt::verify(token, &keys).ok()?;
        let audience = match blob {
            Some(_) => blob_grant::grant_audience(&self.cfg.service),
            None => self.cfg.service.clone(),
        };
        if claims.aud != audience || claims.iss != self.cfg.service || now >= claims.exp || claims.nbf > now + LEEWAY_SECS {
            return None;
        }
        if claims.blob.as_deref() != blob {
            return None;
        }
        // The subject (and a robot's secret) must still exist; what it may do now caps
        // what the token grants.
        let (identity, valid_until) = self.identity(&claims.sub, claims.sid.as_deref()).ok()??;
        let access = claims
            .access
            .into_iter()
            .map(|mut a| {
                a.actions.retain(|act| identity.allows_entry(&a.kind, &a.name, act));
                a
            })
            .filter(|a| !a.actions.is_empty())
            .collect();
        let until = claims.exp.min(valid_until);
        Some((Caller::Token { identity, access, token_id: claims.jti }, until))
    }

    /// Checks basic credentials: a user's password (argon2) or a robot token's secret
    /// (`robot$<name>`), cached per epoch.
    pub fn verify_password(&self, user: &str, password: &str, peer: Option<IpAddr>) -> Result<Caller, AuthError> {
        self.logins.check(user, peer).map_err(AuthError::TooManyRequests)?;
        let result = self.check_password(user, password);
        if matches!(result, Err(AuthError::BadCredentials)) {
            self.login_failed(user, peer);
        }
        result
    }

    /// Counts a failed login against the limit and in the metrics.
    fn login_failed(&self, user: &str, peer: Option<IpAddr>) {
        self.logins.record_failure(user, peer);
        metrics::counter!("meridian_auth_failed_logins_total").increment(1);
    }

    fn check_password(&self, user: &str, password: &str) -> Result<Caller, AuthError> {
        let epoch = self.store.auth_epoch();
        let now = now_unix();
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(c) = lock(&self.basics).get(&key) {
            if c.epoch == epoch && now < c.until {
                return Ok(c.caller.clone());
            }
        }
        let internal = |e: crate::meta::store::StoreError| AuthError::Internal(e.to_string());
        let (identity, until) = if let Some(robot) = user.strip_prefix(ROBOT_PREFIX) {
            let record = self.store.robot(robot).map_err(internal)?.ok_or(AuthError::BadCredentials)?;
            let hash = robot_secret_hash(password);
            let secret = record
                .secrets
                .iter()
                .find(|s| s.sha256 == hash && s.expires_unix.is_none_or(|e| now < e))
                .ok_or(AuthError::BadCredentials)?;
            self.identity(user, Some(&secret.id)).map_err(internal)?.ok_or(AuthError::BadCredentials)?
        } else {
            let record = self.store.user(user).map_err(internal)?;
            if !record.is_some_and(|r| password::verify(password, &r.password_hash)) {
                return Err(AuthError::BadCredentials);
            }
            self.identity(user, None).map_err(internal)?.ok_or(AuthError::BadCredentials)?
        };
        let caller = Caller::Identity(identity);
        let mut cache = lock(&self.basics);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, Cached { epoch, caller: caller.clone(), until });
        Ok(caller)
    }

    /// The current grants of `subject` (a user, or `robot$<name>` with the secret id it
    /// logged in with) and until when they hold (a robot secret's expiry); `None` when the
    /// subject, its secret or its scope map is gone.
    fn identity(&self, subject: &str, secret_id: Option<&str>) -> Result<Option<(Identity, u64)>, crate::meta::store::StoreError> {
        let now = now_unix();
        let Some(name) = subject.strip_prefix(ROBOT_PREFIX) else {
            return Ok(self.store.user(subject)?.map(|u| {
                (Identity { subject: subject.to_string(), secret_id: None, grants: role_grants(u.role) }, u64::MAX)
            }));
        };
        let Some(robot) = self.store.robot(name)? else { return Ok(None) };
        let Some(secret) = robot.secrets.iter().find(|s| Some(s.id.as_str()) == secret_id) else { return Ok(None) };
        let until = secret.expires_unix.unwrap_or(u64::MAX);
        if now >= until {
            return Ok(None);
        }
        let grants = match Role::parse(&robot.scope_map) {
            Some(role) => role_grants(role),
            None => match self.store.scope_map(&robot.scope_map)? {
                Some(map) => map.grants,
                None => return Ok(None),
            },
        };
        Ok(Some((Identity { subject: subject.to_string(), secret_id: Some(secret.id.clone()), grants }, until)))
    }

    /// `/token`: the intersection of the requested scopes with what the caller may do,
    /// in a token signed with the newest key.
    pub fn issue(&self, caller: &Caller, service: Option<&str>, scopes: &[RequestedScope]) -> Result<IssuedToken, AuthError> {
        if let Some(s) = service {
            if s != self.cfg.service {
                return Err(AuthError::BadRequest(format!("unknown service {s:?}")));
            }
        }
        let (subject, sid) = match caller {
            Caller::Identity(i) | Caller::Token { identity: i, .. } => (i.subject.clone(), i.secret_id.clone()),
            Caller::Anonymous | Caller::Open => (String::new(), None),
        };
        let mut access = Vec::new();
        for s in scopes {
            let granted: Vec<String> = s
                .actions
                .iter()
                .filter(|a| match (s.kind.as_str(), Action::parse(a)) {
                    ("repository", Some(action)) => self.allows_action(caller, &s.name, action),
                    ("registry", None) if s.name == "catalog" && a.as_str() == "*" => {
                        matches!(caller, Caller::Identity(i) if i.is_admin())
                    }
                    _ => false,
                })
                .cloned()
                .collect();
            if !granted.is_empty() {
                access.push(AccessEntry { kind: s.kind.clone(), name: s.name.clone(), actions: granted });
            }
        }
        let keys = self.store.signing_keys().map_err(|e| AuthError::Internal(e.to_string()))?;
        let key = keys.last().ok_or_else(|| AuthError::NotReady("no token-signing key yet (cluster still starting)".into()))?;
        let now = now_unix();
        let ttl = self.cfg.token_ttl_secs.max(1);
        let claims = jwt::Claims {
            iss: self.cfg.service.clone(),
            sub: subject,
            aud: self.cfg.service.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: password::random_secret(20),
            sid,
            access,
            blob: None,
        };
        let token = jwt::sign(&claims, key).ok_or_else(|| AuthError::Internal("cannot sign a token".into()))?;
        Ok(IssuedToken { access_token: token.clone(), token, expires_in: ttl, issued_at: rfc3339(now) })
    }

}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Scheme credentials` with a case-insensitive scheme.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// `base64(user:password)` → (user, password).
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// RFC 3339 UTC for a Unix time (civil-from-days, no calendar crate needed).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::records::{encode_json, UserRecord};
    use crate::meta::store::{auth_key, CF_SM_AUTH};

    /// A store holding one signing key and one admin user, as the state machine writes them.
    pub(crate) fn store_with_key() -> (tempfile::TempDir, Store, crate::meta::records::SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let key = jwt::new_key("k1".into(), 1);
        let user = UserRecord { name: "ops".into(), password_hash: "x".into(), role: Role::Admin, created_unix: 1 };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(store.cf(CF_SM_AUTH).unwrap(), auth_key("key", "k1"), encode_json(&key));
        batch.put_cf(store.cf(CF_SM_AUTH).unwrap(), auth_key("user", "ops"), encode_json(&user));
        store.write_durable(batch).unwrap();
        (dir, store, key)
    }

    /// Tokens signed with the cluster's own key are still refused when they name another
    /// service as issuer or audience (the HTTP tests cannot mint such tokens: `/token`
    /// refuses other services).
    #[test]
    fn tokens_for_another_service_are_refused() {
        let (_dir, store, key) = store_with_key();
        let auth = Auth::new(AuthConfig::default(), store, false);
        let now = now_unix();
        let claims = |aud: &str, iss: &str| jwt::Claims {
            iss: iss.into(),
            sub: "ops".into(),
            aud: aud.into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            jti: "j".into(),
            sid: None,
            access: vec![AccessEntry { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into()] }],
            blob: None,
        };
        let bearer = |c: jwt::Claims| format!("Bearer {}", jwt::sign(&c, &key).unwrap());
        let need = Need::Repo { name: "a/b", actions: &[Action::Pull] };
        let ok = auth.identify(Some(&bearer(claims("meridian", "meridian"))), None, None).unwrap();
        assert!(auth.allows(&ok, need), "a token for this service works");
        for (aud, iss) in [("other-registry", "meridian"), ("meridian", "someone-else")] {
            let refused = auth.identify(Some(&bearer(claims(aud, iss))), None, None);
            assert!(matches!(refused, Err(AuthError::Unauthorized { .. })), "aud {aud} iss {iss}");
        }
        let mut expired = claims("meridian", "meridian");
        expired.exp = now - 1;
        assert!(matches!(auth.identify(Some(&bearer(expired)), None, None), Err(AuthError::Unauthorized { .. })));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_874_384), "2026-11-28T13:59:44Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
