//! Access (administrators, with auth on): users (add, change role, reset password,
//! remove), robot tokens (create, revoke) and scope maps (add, remove) — through the
//! very calls `meridian admin` makes (`cluster::identity_admin`), so the same checks
//! hold: names, roles, never removing or demoting the last admin. A new password or
//! token secret is shown once, in the answer to the form that made it (never in a URL,
//! never cached, never logged).

use super::super::html::Section;
use super::super::{csrf, Console, Visitor};
use crate::auth::password::random_secret;
use crate::cluster::{admin_identities as identities, admin_users as users};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use meridian_proto::admin::{CreateTokenRequest, PutUserRequest, RevokeTokenRequest, ScopeMapInfo};
use std::sync::Arc;
use tonic::Code;

/// Length of a password the console generates on a reset.
const RESET_PASSWORD_CHARS: usize = 24;

/// Whether `visitor` may manage identities here: an administrator, with auth on and
/// `console.manage_identities`.
pub fn may_manage(console: &Console, visitor: &Visitor) -> bool {
    console.cfg.manage_identities && super::regions::may_see_regions(console, visitor)
}

/// The outcome of a form, shown above the lists.
enum Notice {
    Done(String),
    /// Something made once and shown once: what it is, the login name, the secret.
    Secret { what: String, login: String, secret: String },
    Failed(String),
}

/// `GET /ui/access`.
pub async fn show(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(visitor) = console.visitor(&headers) else { return super::log_in_first("/ui/access", None) };
    if !may_manage(&console, &visitor) {
        return super::message(StatusCode::FORBIDDEN, "Not allowed", "Only administrators manage users and tokens.");
    }
    page(&console, &visitor, StatusCode::OK, None)
}

/// `POST /ui/access/<action>`.
pub async fn submit(State(console): State<Arc<Console>>, Path(action): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(visitor) = console.visitor(&parts.headers) else { return super::log_in_first("/ui/access", None) };
    let f = match super::read_form(body).await {
        Ok(f) => f,
        Err(too_large) => return too_large,
    };
    if !console.form_is_genuine(&parts.headers, &visitor.nonce, f.get(csrf::FIELD)) {
        return super::forged();
    }
    if !may_manage(&console, &visitor) {
        return super::message(StatusCode::FORBIDDEN, "Not allowed", "Only administrators manage users and tokens.");
    }
    let field = |k: &str| f.get(k).unwrap_or_default().trim().to_string();
    let admin = &console.identities;
    let by = visitor.user.clone().unwrap_or_default();
    let outcome: Result<Notice, tonic::Status> = match action.as_str() {
        "user-add" => {
            let req = PutUserRequest { name: field("name"), role: field("role"), password: f.get("password").unwrap_or_default().to_string(), replace: false };
            users::put_user(admin, req).await.map(|u| Notice::Done(format!("User {} added with role {}.", u.name, u.role)))
        }
        "user-role" => {
            let req = PutUserRequest { name: field("name"), role: field("role"), password: String::new(), replace: true };
            users::put_user(admin, req).await.map(|u| Notice::Done(format!("{} now has role {}.", u.name, u.role)))
        }
        "user-reset" => {
            let password = random_secret(RESET_PASSWORD_CHARS);
            let req = PutUserRequest { name: field("name"), role: String::new(), password: password.clone(), replace: true };
            users::put_user(admin, req).await.map(|u| Notice::Secret {
                what: format!("New password of {} (their sessions have ended)", u.name),
                login: u.name,
                secret: password,
            })
        }
        "user-remove" => {
            let name = field("name");
            users::remove_user(admin, name.clone()).await.map(|()| Notice::Done(format!("User {name} removed.")))
        }
        "token-create" => {
            match expiry_days(&field("expires_days")) {
                Err(e) => Err(e),
                Ok(days) => {
                    let req = CreateTokenRequest { name: field("name"), scope_map: field("scope_map"), expires_in_secs: days.saturating_mul(86_400) };
                    identities::create_token(admin, req).await
                }
            }
            .map(|t| Notice::Secret {
                what: format!("Secret {} of token {} (scope map {})", t.secret_id, t.username, t.scope_map),
                login: t.username,
                secret: t.secret,
            })
        }
        "token-revoke" => {
            let (name, secret_id) = (field("name"), field("secret_id"));
            let req = RevokeTokenRequest { name: name.clone(), secret_id: secret_id.clone() };
            identities::revoke_token(admin, req).await.map(|()| match secret_id.is_empty() {
                true => Notice::Done(format!("Token {name} revoked.")),
                false => Notice::Done(format!("Secret {secret_id} of token {name} revoked.")),
            })
        }
        "scope-map-add" => {
            // Grants are separated by white space: a grant's actions by commas.
            let grants = field("grants").split_whitespace().map(String::from).collect();
            let req = ScopeMapInfo { name: field("name"), grants, replace: false, builtin: false, created_unix: 0 };
            identities::put_scope_map(admin, req).await.map(|m| Notice::Done(format!("Scope map {} added.", m.name)))
        }
        "scope-map-remove" => {
            let name = field("name");
            identities::remove_scope_map(admin, name.clone()).await.map(|()| Notice::Done(format!("Scope map {name} removed.")))
        }
        _ => return super::not_found(),
    };
    let (status, notice) = match outcome {
        Ok(n) => {
            tracing::info!(action = %action, by = %by, "console access change");
            (StatusCode::OK, n)
        }
        Err(s) => (status_of(s.code()), Notice::Failed(s.message().to_string())),
    };
    let mut resp = page(&console, &visitor, status, Some(notice));
    // A page holding a secret is never stored (the layer's `no-store` says so too).
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A token's expiry in days: empty means never; anything but a whole number is refused.
fn expiry_days(field: &str) -> Result<u64, tonic::Status> {
    if field.is_empty() {
        return Ok(0);
    }
    field.parse().map_err(|_| tonic::Status::invalid_argument(format!("expiry {field:?} is not a whole number of days")))
}

/// The admin API's status as the console answers it.
fn status_of(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn page(console: &Console, visitor: &Visitor, status: StatusCode, notice: Option<Notice>) -> Response {
    let admin = &console.identities;
    let lists = (users::list_users(admin), identities::list_tokens(admin), identities::list_scope_maps(admin));
    let (Ok(user_list), Ok(tokens), Ok(maps)) = lists else {
        return super::message(StatusCode::SERVICE_UNAVAILABLE, "Access", "Cannot read the identities right now.");
    };
    let token = visitor.csrf(console);
    let form = |action: &str, inner: Markup| -> Markup {
        html! {
            form.inline method="post" action={ "/ui/access/" (action) } {
                input type="hidden" name=(csrf::FIELD) value=(token);
                (inner)
            }
        }
    };
    let roles = ["reader", "writer", "admin"];
    let body = html! {
        h1 { "Access" }
        @match &notice {
            Some(Notice::Done(m)) => p.notice #notice { (m) },
            Some(Notice::Failed(m)) => p.error #notice { (m) },
            Some(Notice::Secret { what, login, secret }) => div.secret #secret {
                p { (what) ": shown this once, copy it now." }
                p { "Log in as " code #secret-login { (login) } " with " }
                input.mono #secret-value type="text" readonly value=(secret);
                button type="button" data-copy=(secret) { "Copy" }
            },
            None => {},
        }
        h2 { "Users" }
        table #users {
            thead { tr { th { "User" } th { "Role" } th { "Created" } th {} } }
            tbody {
                @for u in &user_list.users {
                    tr data-user=(u.name) {
                        td.name { (u.name) }
                        td.role {
                            (form("user-role", html! {
                                input type="hidden" name="name" value=(u.name);
                                select name="role" { @for r in roles { option value=(r) selected[r == u.role] { (r) } } }
                                button.set-role type="submit" { "Set" }
                            }))
                        }
                        td { (super::super::html::time(u.created_unix)) }
                        td.actions {
                            (form("user-reset", html! { input type="hidden" name="name" value=(u.name); button.reset type="submit" { "Reset password" } }))
                            " "
                            (form("user-remove", html! { input type="hidden" name="name" value=(u.name); button.danger.remove type="submit" { "Remove" } }))
                        }
                    }
                }
            }
        }
        h3 { "Add a user" }
        (form("user-add", html! {
            input #new-user type="text" name="name" placeholder="name" required;
            select #new-user-role name="role" { @for r in roles { option value=(r) { (r) } } }
            input #new-user-password type="password" name="password" placeholder="password (8+ characters)" autocomplete="new-password" required;
            button #add-user type="submit" { "Add" }
        }))
        h2 { "Robot tokens" }
        table #tokens {
            thead { tr { th { "Log in as" } th { "Scope map" } th { "Secrets" } th {} } }
            tbody {
                @for t in &tokens.tokens {
                    tr data-token=(t.name) {
                        td.mono { (t.username) }
                        td { (t.scope_map) }
                        td {
                            @for s in &t.secrets {
                                div {
                                    span.mono { (s.id) } " "
                                    span.muted { @if s.expires_unix == 0 { "never expires" } @else { "expires " (super::super::html::time(s.expires_unix)) } }
                                    " "
                                    (form("token-revoke", html! {
                                        input type="hidden" name="name" value=(t.name);
                                        input type="hidden" name="secret_id" value=(s.id);
                                        button type="submit" { "Revoke" }
                                    }))
                                }
                            }
                        }
                        td { (form("token-revoke", html! { input type="hidden" name="name" value=(t.name); button.danger type="submit" { "Revoke all" } })) }
                    }
                }
            }
        }
        h3 { "Create a token" }
        (form("token-create", html! {
            input #new-token type="text" name="name" placeholder="name" required;
            select #new-token-map name="scope_map" {
                @for m in &maps.scope_maps { option value=(m.name) { (m.name) } }
            }
            input type="text" name="expires_days" placeholder="expires in days (empty: never)";
            button #create-token type="submit" { "Create" }
        }))
        h2 { "Scope maps" }
        table #scope-maps {
            thead { tr { th { "Name" } th { "Grants" } th {} } }
            tbody {
                @for m in &maps.scope_maps {
                    tr {
                        td { (m.name) @if m.builtin { " " span.muted { "(built in)" } } }
                        td.mono { (m.grants.join(", ")) }
                        td { @if !m.builtin { (form("scope-map-remove", html! { input type="hidden" name="name" value=(m.name); button.danger type="submit" { "Remove" } })) } }
                    }
                }
            }
        }
        h3 { "Add a scope map" }
        (form("scope-map-add", html! {
            input type="text" name="name" placeholder="name" required;
            input type="text" name="grants" placeholder="team/*:pull,push other/app:pull (space-separated)" required;
            button type="submit" { "Add" }
        }))
    };
    let mut resp = super::render(console, visitor, "Access", Section::Access, body);
    *resp.status_mut() = status;
    resp
}
