//! The web console as a client sees it over HTTP: whole replies, cookies, CSRF tokens,
//! logging in through the form, and what the API says of a manifest.

use reqwest::header::HeaderMap;

/// A console response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    /// The `Set-Cookie` line for cookie `name`, if the reply sets it.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::from)
    }

    /// `name=value` of cookie `name`, to send back.
    pub fn cookie(&self, name: &str) -> String {
        let line = self.set_cookie(name).unwrap_or_else(|| panic!("no {name} cookie set: {:?}", self.headers));
        line.split(';').next().unwrap_or_default().to_string()
    }

    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = "name=\"_csrf\" value=\"";
        let at = self.body.find(marker).unwrap_or_else(|| panic!("no CSRF field in {}", self.body)) + marker.len();
        self.body[at..].split('"').next().unwrap_or_default().to_string()
    }
}

/// A client that does not follow redirects (the console's answers are the test).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// `GET url`, with the session cookie `cookie` if any.
pub async fn get(url: &str, cookie: Option<&str>) -> Reply {
    let mut req = client().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.expect("GET");
    Reply { status: resp.status().as_u16(), headers: resp.headers().clone(), body: resp.text().await.unwrap_or_default() }
}

/// `POST url` of a form, with `cookie` and extra `headers`.
pub async fn post(url: &str, cookie: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Reply {
    let mut req = client().post(url).header("cookie", cookie).form(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("POST");
    Reply { status: resp.status().as_u16(), headers: resp.headers().clone(), body: resp.text().await.unwrap_or_default() }
}

/// Logs in at `base` (whose origin is `origin`) and returns the session cookie to send.
pub async fn login(base: &str, origin: &str, user: &str, password: &str, cookie_name: &str) -> String {
    let page = get(&format!("{base}/ui/login"), None).await;
    assert_eq!(page.status, 200);
    let pre = page.cookie(cookie_name.replace("session", "login").as_str());
    let done = post(
        &format!("{base}/ui/login"),
        &pre,
        &[("origin", origin)],
        &[("_csrf", &page.csrf()), ("user", user), ("password", password), ("next", "/ui/repos")],
    )
    .await;
    assert_eq!(done.status, 303, "login of {user} at {base}: {}", done.body);
    done.cookie(cookie_name)
}

/// `GET /v2/<repo>/manifests/<reference>` as `admin` with `admin_password`: its status.
pub async fn manifest_status(base: &str, admin_password: &str, repo: &str, reference: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .basic_auth("admin", Some(admin_password))
        .header("accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .expect("GET manifest")
        .status()
        .as_u16()
}

/// The status of a console login at `base` as `user` (303: logged in; 401: refused).
pub async fn login_status(base: &str, user: &str, password: &str) -> u16 {
    let page = get(&format!("{base}/ui/login"), None).await;
    let form = [("_csrf", page.csrf()), ("user", user.to_string()), ("password", password.to_string())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(&format!("{base}/ui/login"), &page.cookie("meridian_login"), &[("origin", base)], &form).await.status
}
