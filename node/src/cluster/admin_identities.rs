//! The admin service's identity calls besides users: scope maps, robot tokens and
//! token-signing keys. The service checks the admin token and calls these. Changes run one
//! at a time through `users_lock`, after this node has caught up with the leader, so
//! "exists?" and "in use?" are answered from every acknowledged write. Secrets never reach
//! a reply (except a new robot secret, once) nor a log line.

use super::admin_service::{check_name, internal, meta_status, USER_CATCH_UP_TIMEOUT};
use super::identity_admin::IdentityAdmin;
use crate::auth::scope::{parse_grant, role_grants, BUILTIN_SCOPE_MAPS};
use crate::auth::{jwt, now_unix, password::random_secret, robot_secret_hash, ROBOT_PREFIX};
use crate::meta::command::{Command, CommandResult};
use crate::meta::records::{Grant, Role, RobotRecord, RobotSecret, ScopeMap, SigningKey};
use meridian_proto::admin::*;
use tonic::Status;

/// Characters of a new robot secret.
const ROBOT_SECRET_LEN: usize = 32;
/// Characters of a secret id and of a key id's random part.
const ID_LEN: usize = 8;

/// A grant as the API shows it: `PATTERN:ACTIONS`.
pub fn grant_text(g: &Grant) -> String {
    format!("{}:{}", g.pattern, g.actions.join(","))
}

fn is_builtin_map(name: &str) -> bool {
    BUILTIN_SCOPE_MAPS.contains(&name)
}

/// Proposes an identity change and turns a refusal into the matching status; `what`
/// names the record (`scope map "x"`).
async fn propose(svc: &IdentityAdmin, what: &str, cmd: Command) -> Result<(), Status> {
    match svc.meta.propose(cmd).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(()),
        CommandResult::AlreadyExists => Err(Status::already_exists(format!("{what} already exists"))),
        CommandResult::UserUnknown => Err(Status::not_found(format!("{what} does not exist"))),
        other => Err(internal(format!("unexpected result of an identity change: {other:?}"))),
    }
}

// ------------------------------------------------------------------ scope maps

fn scope_map_info(map: &ScopeMap) -> ScopeMapInfo {
    ScopeMapInfo {
        name: map.name.clone(),
        grants: map.grants.iter().map(grant_text).collect(),
        replace: false,
        builtin: false,
        created_unix: map.created_unix,
    }
}

/// The three built-in maps: the roles' grants.
fn builtin_scope_maps() -> Vec<ScopeMapInfo> {
    BUILTIN_SCOPE_MAPS
        .iter()
        .filter_map(|name| Role::parse(name).map(|role| (name, role)))
        .map(|(name, role)| ScopeMapInfo {
            name: name.to_string(),
            grants: role_grants(role).iter().map(grant_text).collect(),
            replace: false,
            builtin: true,
            created_unix: 0,
        })
        .collect()
}

/// Checks a `PutScopeMap` request's name and grants; returns the parsed grants.
fn check_put_scope_map(req: &ScopeMapInfo) -> Result<Vec<Grant>, Status> {
    check_name("scope map", &req.name)?;
    if is_builtin_map(&req.name) {
        return Err(Status::invalid_argument(format!(
            "{:?} is a built-in scope map and cannot be {}; choose another name",
            req.name,
            if req.replace { "changed" } else { "redefined" }
        )));
    }
    if req.grants.is_empty() {
        return Err(Status::invalid_argument("a scope map needs at least one grant (PATTERN:ACTIONS)"));
    }
    req.grants.iter().map(|g| parse_grant(g.trim()).map_err(Status::invalid_argument)).collect()
}

pub async fn put_scope_map(svc: &IdentityAdmin, req: ScopeMapInfo) -> Result<ScopeMapInfo, Status> {
    let grants = check_put_scope_map(&req)?;
    let ScopeMapInfo { name, replace, .. } = req;
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let existing = svc.store().scope_map(&name).map_err(internal)?;
    let created_unix = match (existing, replace) {
        (Some(_), false) => {
            return Err(Status::already_exists(format!(
                "scope map {name:?} already exists (use `meridian admin scope-map update` to change it)"
            )))
        }
        (None, true) => return Err(Status::not_found(format!("no scope map named {name:?}"))),
        (None, false) => now_unix(),
        (Some(current), true) => current.created_unix,
    };
    let map = ScopeMap { name: name.clone(), grants, created_unix };
    let info = scope_map_info(&map);
    propose(svc, &format!("scope map {name:?}"), Command::PutScopeMap { map }).await?;
    tracing::info!(scope_map = %name, grants = info.grants.len(), replaced = replace, "scope map saved");
    Ok(info)
}

pub async fn remove_scope_map(svc: &IdentityAdmin, name: String) -> Result<(), Status> {
    check_name("scope map", &name)?;
    if is_builtin_map(&name) {
        return Err(Status::failed_precondition(format!("{name:?} is a built-in scope map and cannot be removed")));
    }
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let store = svc.store();
    if store.scope_map(&name).map_err(internal)?.is_none() {
        return Err(Status::not_found(format!("no scope map named {name:?}")));
    }
    let users: Vec<String> =
        store.robots().map_err(internal)?.into_iter().filter(|r| r.scope_map == name).map(|r| r.name).collect();
    if !users.is_empty() {
        return Err(Status::failed_precondition(format!(
            "scope map {name:?} is used by token(s) {}; revoke them first",
            users.join(", ")
        )));
    }
    propose(svc, &format!("scope map {name:?}"), Command::RemoveScopeMap { name: name.clone() }).await?;
    tracing::info!(scope_map = %name, "scope map removed");
    Ok(())
}

pub fn list_scope_maps(svc: &IdentityAdmin) -> Result<ListScopeMapsReply, Status> {
    let mut custom: Vec<ScopeMapInfo> =
        svc.store().scope_maps().map_err(internal)?.iter().map(scope_map_info).collect();
    custom.sort_by(|a, b| a.name.cmp(&b.name));
    let mut scope_maps = builtin_scope_maps();
    scope_maps.extend(custom);
    Ok(ListScopeMapsReply { scope_maps })
}

// ------------------------------------------------------------------ robot tokens

/// A new secret id, unlike any of `taken`.
fn new_secret_id(taken: &[RobotSecret]) -> String {
    loop {
        let id = random_secret(ID_LEN).to_ascii_lowercase();
        if !taken.iter().any(|s| s.id == id) {
            return id;
        }
    }
}

pub async fn create_token(svc: &IdentityAdmin, req: CreateTokenRequest) -> Result<CreatedToken, Status> {
    let CreateTokenRequest { name, scope_map, expires_in_secs } = req;
    check_name("token", &name)?;
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let store = svc.store();
    let now = now_unix();
    let (mut robot, created) = match store.robot(&name).map_err(internal)? {
        Some(current) => {
            if !scope_map.is_empty() && scope_map != current.scope_map {
                return Err(Status::failed_precondition(format!(
                    "token {name:?} uses scope map {:?}; a token keeps its scope map, so create a token with a \
                     new name for {scope_map:?}",
                    current.scope_map
                )));
            }
            (current, false)
        }
        None => {
            if scope_map.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "there is no token named {name:?}; a new token needs a scope map \
                     (meridian admin token create NAME --scope-map MAP)"
                )));
            }
            if !is_builtin_map(&scope_map) && store.scope_map(&scope_map).map_err(internal)?.is_none() {
                return Err(Status::not_found(format!(
                    "no scope map named {scope_map:?} (built-in ones: {})",
                    BUILTIN_SCOPE_MAPS.join(", ")
                )));
            }
            (RobotRecord { name: name.clone(), scope_map, secrets: Vec::new(), created_unix: now }, true)
        }
    };
    let secret = random_secret(ROBOT_SECRET_LEN);
    let secret_id = new_secret_id(&robot.secrets);
    let expires_unix = (expires_in_secs > 0).then(|| now.saturating_add(expires_in_secs));
    robot.secrets.push(RobotSecret {
        id: secret_id.clone(),
        sha256: robot_secret_hash(&secret),
        created_unix: now,
        expires_unix,
    });
    let scope_map = robot.scope_map.clone();
    propose(svc, &format!("token {name:?}"), Command::PutRobot { robot }).await?;
    tracing::info!(token = %name, scope_map = %scope_map, secret_id = %secret_id, created, "token secret created");
    Ok(CreatedToken {
        username: format!("{ROBOT_PREFIX}{name}"),
        secret_id,
        secret,
        expires_unix: expires_unix.unwrap_or(0),
        scope_map,
        created,
    })
}

pub async fn revoke_token(svc: &IdentityAdmin, req: RevokeTokenRequest) -> Result<(), Status> {
    let RevokeTokenRequest { name, secret_id } = req;
    check_name("token", &name)?;
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let mut robot = svc
        .store()
        .robot(&name)
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("no token named {name:?}")))?;
    let what = format!("token {name:?}");
    if secret_id.is_empty() {
        propose(svc, &what, Command::RemoveRobot { name: name.clone() }).await?;
        tracing::info!(token = %name, "token revoked");
        return Ok(());
    }
    let before = robot.secrets.len();
    robot.secrets.retain(|s| s.id != secret_id);
    if robot.secrets.len() == before {
        return Err(Status::not_found(format!("token {name:?} has no secret with id {secret_id:?}")));
    }
    propose(svc, &what, Command::PutRobot { robot }).await?;
    tracing::info!(token = %name, secret_id = %secret_id, "token secret revoked");
    Ok(())
}

fn token_info(robot: &RobotRecord) -> TokenInfo {
    TokenInfo {
        name: robot.name.clone(),
        username: format!("{ROBOT_PREFIX}{}", robot.name),
        scope_map: robot.scope_map.clone(),
        created_unix: robot.created_unix,
        secrets: robot
            .secrets
            .iter()
            .map(|s| TokenSecretInfo { id: s.id.clone(), created_unix: s.created_unix, expires_unix: s.expires_unix.unwrap_or(0) })
            .collect(),
    }
}

pub fn list_tokens(svc: &IdentityAdmin) -> Result<ListTokensReply, Status> {
    let mut tokens: Vec<TokenInfo> = svc.store().robots().map_err(internal)?.iter().map(token_info).collect();
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ListTokensReply { tokens })
}

// ------------------------------------------------------------------ signing keys

/// A new key that sorts after `newest` (keys sort by creation time, then kid; the last one
/// signs), so it signs even when rotated within the same second.
fn next_key(newest: Option<&SigningKey>, now: u64) -> SigningKey {
    let mut created = now;
    if let Some(newest) = newest {
        created = created.max(newest.created_unix);
        if created == newest.created_unix {
            for _ in 0..64 {
                let kid = format!("k{}", random_secret(ID_LEN));
                if kid > newest.kid {
                    return jwt::new_key(kid, created);
                }
            }
            created += 1;
        }
    }
    jwt::new_key(format!("k{}", random_secret(ID_LEN)), created)
}

pub async fn rotate_key(svc: &IdentityAdmin) -> Result<KeyInfo, Status> {
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let keys = svc.store().signing_keys().map_err(internal)?;
    let key = next_key(keys.last(), now_unix());
    let info = KeyInfo { kid: key.kid.clone(), created_unix: key.created_unix, signing: true };
    propose(svc, &format!("signing key {:?}", info.kid), Command::AddSigningKey { key }).await?;
    tracing::info!(kid = %info.kid, "token-signing key rotated");
    Ok(info)
}

pub async fn retire_key(svc: &IdentityAdmin, kid: String) -> Result<(), Status> {
    if kid.is_empty() {
        return Err(Status::invalid_argument("no key id given"));
    }
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let keys = svc.store().signing_keys().map_err(internal)?;
    let position = keys
        .iter()
        .position(|k| k.kid == kid)
        .ok_or_else(|| Status::not_found(format!("no signing key with id {kid:?}")))?;
    if position + 1 == keys.len() {
        return Err(Status::failed_precondition(format!(
            "{kid} is the signing key; rotate first (meridian admin key rotate), then retire it"
        )));
    }
    propose(svc, &format!("signing key {kid:?}"), Command::RemoveSigningKey { kid: kid.clone() }).await?;
    tracing::info!(kid = %kid, "token-signing key retired");
    Ok(())
}

pub fn list_keys(svc: &IdentityAdmin) -> Result<ListKeysReply, Status> {
    let keys = svc.store().signing_keys().map_err(internal)?;
    let last = keys.len().saturating_sub(1);
    let keys = keys
        .iter()
        .enumerate()
        .map(|(i, k)| KeyInfo { kid: k.kid.clone(), created_unix: k.created_unix, signing: i == last })
        .collect();
    Ok(ListKeysReply { keys })
}
