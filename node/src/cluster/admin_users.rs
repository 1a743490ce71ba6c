//! The admin service's user calls: create or change a user, remove one, list them. The
//! service checks the admin token and calls these. Changes run one at a time through
//! `users_lock`, after this node has caught up with the leader, and never leave the
//! cluster without a user with role admin. Passwords never reach a reply nor a log line.

use super::admin_service::{check_name, internal, meta_status, USER_CATCH_UP_TIMEOUT};
use super::identity_admin::IdentityAdmin;
use crate::auth::{now_unix, password};
use crate::meta::command::{Command, CommandResult};
use crate::meta::records::{Role, UserRecord};
use meridian_proto::admin::{ListUsersReply, PutUserRequest, UserInfo};
use tonic::Status;

/// Shortest password a user may be given.
const MIN_PASSWORD_CHARS: usize = 8;

/// A user name: 1–64 characters of `[a-z0-9._-]`, starting with a letter or digit.
fn check_user_name(name: &str) -> Result<(), Status> {
    check_name("user", name)
}

/// A role name; empty means "not given".
fn check_role(role: &str) -> Result<Option<Role>, Status> {
    if role.is_empty() {
        return Ok(None);
    }
    Role::parse(role)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("invalid role {role:?}: expected reader, writer or admin")))
}

/// Checks a `PutUser` request's fields; returns the role it names, if any. Never puts the
/// password into a message.
fn check_put_user(req: &PutUserRequest) -> Result<Option<Role>, Status> {
    check_user_name(&req.name)?;
    let role = check_role(&req.role)?;
    if !req.replace {
        if role.is_none() {
            return Err(Status::invalid_argument("a new user needs a role (reader, writer or admin)"));
        }
        if req.password.is_empty() {
            return Err(Status::invalid_argument("a new user needs a password"));
        }
    } else if role.is_none() && req.password.is_empty() {
        return Err(Status::invalid_argument("nothing to change: give a new role, a new password, or both"));
    }
    if !req.password.is_empty() && req.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Status::invalid_argument(format!("the password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    Ok(role)
}

fn user_info(user: &UserRecord) -> UserInfo {
    UserInfo { name: user.name.clone(), role: user.role.as_str().to_string(), created_unix: user.created_unix }
}

/// Hashes off the async runtime (argon2 is deliberately slow).
async fn hash_password(secret: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(|e| internal(format!("password hashing stopped: {e}")))?
        .map_err(|e| internal(format!("cannot hash the password: {e}")))
}

/// Users with role admin, from this node's store.
fn admin_count(svc: &IdentityAdmin) -> Result<usize, Status> {
    let users = svc.store().users().map_err(internal)?;
    Ok(users.iter().filter(|u| u.role == Role::Admin).count())
}

/// Proposes a user change and turns a refusal into the matching status.
async fn propose_user(svc: &IdentityAdmin, name: &str, cmd: Command) -> Result<(), Status> {
    match svc.meta.propose(cmd).await.map_err(meta_status)? {
        CommandResult::Applied => Ok(()),
        CommandResult::AlreadyExists => Err(Status::already_exists(format!("user {name:?} already exists"))),
        CommandResult::UserUnknown => Err(Status::not_found(format!("no user named {name:?}"))),
        other => Err(internal(format!("unexpected result of a user change: {other:?}"))),
    }
}

pub async fn put_user(svc: &IdentityAdmin, req: PutUserRequest) -> Result<UserInfo, Status> {
    let role = check_put_user(&req)?;
    let PutUserRequest { name, password: secret, replace, .. } = req;
    let _serialized = svc.users_lock.lock().await;
    // Answer "exists"/"unknown" from a store that has every acknowledged write.
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let existing = svc.store().user(&name).map_err(internal)?;
    let user = match (existing, replace) {
        (Some(_), false) => return Err(Status::already_exists(format!("user {name:?} already exists"))),
        (None, true) => return Err(Status::not_found(format!("no user named {name:?}"))),
        (None, false) => UserRecord {
            name: name.clone(),
            password_hash: hash_password(secret).await?,
            // check_put_user requires a role to create.
            role: role.unwrap_or(Role::Reader),
            created_unix: now_unix(),
        },
        (Some(current), true) => {
            let new_role = role.unwrap_or(current.role);
            if current.role == Role::Admin && new_role != Role::Admin && admin_count(svc)? <= 1 {
                return Err(Status::failed_precondition(format!(
                    "{name} is the last user with role admin; give another user the admin role first"
                )));
            }
            let password_hash =
                if secret.is_empty() { current.password_hash.clone() } else { hash_password(secret).await? };
            UserRecord { name: name.clone(), password_hash, role: new_role, created_unix: current.created_unix }
        }
    };
    let info = user_info(&user);
    propose_user(svc, &name, Command::PutUser { user, create_only: !replace }).await?;
    tracing::info!(user = %name, role = %info.role, replaced = replace, "user saved");
    Ok(info)
}

pub async fn remove_user(svc: &IdentityAdmin, name: String) -> Result<(), Status> {
    check_user_name(&name)?;
    let _serialized = svc.users_lock.lock().await;
    svc.meta.catch_up(USER_CATCH_UP_TIMEOUT).await.map_err(meta_status)?;
    let user = svc
        .store()
        .user(&name)
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("no user named {name:?}")))?;
    if user.role == Role::Admin && admin_count(svc)? <= 1 {
        return Err(Status::failed_precondition(format!(
            "{name} is the last user with role admin; give another user the admin role first"
        )));
    }
    propose_user(svc, &name, Command::RemoveUser { name: name.clone() }).await?;
    tracing::info!(user = %name, "user removed");
    Ok(())
}

pub fn list_users(svc: &IdentityAdmin) -> Result<ListUsersReply, Status> {
    let mut users: Vec<UserInfo> = svc.store().users().map_err(internal)?.iter().map(user_info).collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ListUsersReply { users })
}
