//! `meridian admin user …`: the registry's users (add, passwd, role, remove, list).
//!
//! The role is checked and the password read from stdin or generated before connecting; a
//! generated password is shown once.

use super::{call, or_dash, pretty, rfc3339_utc, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::auth::password::random_secret;
use crate::cli::table::{Align, Table};
use crate::meta::records::Role;
use clap::Subcommand;
use meridian_proto::admin::{Empty, PutUserRequest, UserInfo, UserName};
use serde_json::{json, Value};

/// Length of a password generated for `user add` / `user passwd`.
const GENERATED_PASSWORD_LEN: usize = 24;
/// Role names accepted on the command line.
const ROLE_NAMES: [&str; 3] = ["reader", "writer", "admin"];

/// `meridian admin user …`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin a password is generated and shown once.
    Add {
        /// The user's name: 1-64 characters of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// What the user may do on every repository.
        #[arg(long, default_value = "reader", value_parser = ROLE_NAMES)]
        role: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password. Without --password-stdin a password is generated and shown once.
    Passwd {
        /// The user's name.
        name: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role.
    Role {
        /// The user's name.
        name: String,
        /// The new role.
        #[arg(value_parser = ROLE_NAMES)]
        role: String,
    },
    /// Remove a user (refused for the last user with role admin).
    Remove {
        /// The user's name.
        name: String,
    },
    /// List the users.
    List,
}

/// Which change a `PutUser` call makes, for the confirmation line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Created,
    Password,
    Role,
}

/// A user command, checked and with its password in hand, ready to send.
pub enum UserCall {
    /// `generated` is a password made here, shown once in the output.
    Put { request: PutUserRequest, change: UserChange, generated: Option<String> },
    Remove(String),
    List,
}

/// A role typed on the command line (clap already restricts the values).
fn cli_role(role: &str) -> Result<Role, CliError> {
    Role::parse(role).ok_or_else(|| {
        CliError::Usage(format!("invalid role '{role}' (expected one of: {})", ROLE_NAMES.join(", ")))
    })
}

/// The password for `add`/`passwd`: the first line of stdin, or a generated one (returned
/// as the second value too, to be shown).
fn user_password(from_stdin: bool) -> Result<(String, Option<String>), CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
        let password = password_from_line(&line);
        if password.is_empty() {
            return Err(CliError::Usage("--password-stdin: stdin has no password on its first line".to_string()));
        }
        Ok((password.to_string(), None))
    } else {
        let generated = random_secret(GENERATED_PASSWORD_LEN);
        Ok((generated.clone(), Some(generated)))
    }
}

/// A line read from stdin without its line ending (`\n` or `\r\n`); other whitespace is
/// part of the password.
fn password_from_line(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

pub fn prepare_user(cmd: &UserCommand) -> Result<UserCall, CliError> {
    Ok(match cmd {
        UserCommand::Add { name, role, password_stdin } => {
            let role = cli_role(role)?;
            let (password, generated) = user_password(*password_stdin)?;
            let request = PutUserRequest { name: name.clone(), role: role.as_str().to_string(), password, replace: false };
            UserCall::Put { request, change: UserChange::Created, generated }
        }
        UserCommand::Passwd { name, password_stdin } => {
            let (password, generated) = user_password(*password_stdin)?;
            let request = PutUserRequest { name: name.clone(), role: String::new(), password, replace: true };
            UserCall::Put { request, change: UserChange::Password, generated }
        }
        UserCommand::Role { name, role } => {
            let role = cli_role(role)?;
            let request =
                PutUserRequest { name: name.clone(), role: role.as_str().to_string(), password: String::new(), replace: true };
            UserCall::Put { request, change: UserChange::Role, generated: None }
        }
        UserCommand::Remove { name } => UserCall::Remove(name.clone()),
        UserCommand::List => UserCall::List,
    })
}

pub async fn run_user(admin: &Admin, prepared: UserCall, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match prepared {
        UserCall::Put { request, change, generated } => {
            let reply = call(SHORT_CALL_TIMEOUT, client.put_user(admin.request(request))).await?;
            let generated = generated.as_deref();
            Ok(if json {
                pretty(&user_saved_json(&reply, generated))
            } else {
                render_user_saved(change, &reply, generated)
            })
        }
        UserCall::Remove(name) => {
            let req = admin.request(UserName { name: name.clone() });
            call(SHORT_CALL_TIMEOUT, client.remove_user(req)).await?;
            Ok(if json { pretty(&json!({ "removed": name })) } else { format!("user {name} removed\n") })
        }
        UserCall::List => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_users(admin.request(Empty {}))).await?;
            Ok(if json { pretty(&users_json(&reply.users)) } else { render_users(&reply.users) })
        }
    }
}

// ------------------------------------------------------------------ JSON output

fn user_json(u: &UserInfo) -> Value {
    json!({ "name": u.name, "role": u.role, "created_unix": u.created_unix })
}

/// `{"users": [{"name", "role", "created_unix"}]}`
fn users_json(users: &[UserInfo]) -> Value {
    json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })
}

/// The saved user, with `"password"`: the generated one, or null when it came from stdin
/// or was not changed.
fn user_saved_json(u: &UserInfo, generated: Option<&str>) -> Value {
    let mut doc = user_json(u);
    doc["password"] = json!(generated);
    doc
}

// ------------------------------------------------------------------ human output

/// The users table: NAME, ROLE, CREATED (RFC 3339, UTC).
pub fn render_users(users: &[UserInfo]) -> String {
    let mut table = Table::new(&[("NAME", Align::Left), ("ROLE", Align::Left), ("CREATED", Align::Left)]);
    for u in users {
        table.row(vec![or_dash(&u.name), or_dash(&u.role), rfc3339_utc(u.created_unix)]);
    }
    table.render()
}

/// One line saying what changed, then a generated password, once.
pub fn render_user_saved(change: UserChange, u: &UserInfo, generated: Option<&str>) -> String {
    let name = or_dash(&u.name);
    let role = or_dash(&u.role);
    let mut out = match change {
        UserChange::Created => format!("user {name} created with role {role}\n"),
        UserChange::Password => format!("password of user {name} changed\n"),
        UserChange::Role => format!("user {name} now has role {role}\n"),
    };
    if let Some(password) = generated {
        out.push_str(&format!("password: {password}  (shown only now)\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: &str, created_unix: u64) -> UserInfo {
        UserInfo { name: name.to_string(), role: role.to_string(), created_unix }
    }

    #[test]
    fn users_table() {
        let out = render_users(&[user("admin", "admin", 1_714_564_800), user("ci-bot", "writer", 951_782_400), user("old", "reader", 0)]);
        assert_eq!(
            out,
            "NAME    ROLE    CREATED\n\
             admin   admin   2024-05-01T12:00:00Z\n\
             ci-bot  writer  2000-02-29T00:00:00Z\n\
             old     reader  -\n"
        );
        assert_eq!(render_users(&[]), "NAME  ROLE  CREATED\n");
    }

    #[test]
    fn user_saved_lines() {
        let u = user("alice", "writer", 1_714_564_800);
        assert_eq!(
            render_user_saved(UserChange::Created, &u, Some("Abc123")),
            "user alice created with role writer\npassword: Abc123  (shown only now)\n"
        );
        assert_eq!(render_user_saved(UserChange::Created, &u, None), "user alice created with role writer\n");
        assert_eq!(
            render_user_saved(UserChange::Password, &u, Some("Xyz789")),
            "password of user alice changed\npassword: Xyz789  (shown only now)\n"
        );
        assert_eq!(render_user_saved(UserChange::Role, &u, None), "user alice now has role writer\n");
    }

    #[test]
    fn user_json_documents() {
        let u = user("alice", "reader", 7);
        let parsed: Value = serde_json::from_str(&pretty(&users_json(std::slice::from_ref(&u)))).unwrap();
        assert_eq!(parsed, json!({"users": [{"name": "alice", "role": "reader", "created_unix": 7}]}));
        assert_eq!(
            user_saved_json(&u, Some("pw")),
            json!({"name": "alice", "role": "reader", "created_unix": 7, "password": "pw"})
        );
        assert_eq!(user_saved_json(&u, None)["password"], Value::Null);
    }
}
