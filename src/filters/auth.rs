//! Authentication and authorization: bearer tokens, mutual-TLS
//! identities, and per-method allow rules.

use std::fmt;
use std::sync::Arc;

use crate::client::Credentials;
use crate::context::Context;
use crate::filter::{Filter, Next, Reply, Request};
use crate::status::Status;

/// A filter that lets a call through only if its caller is known and
/// allowed to call its method.
///
/// A caller is known by a bearer token in the request's metadata
/// (`authorization: Bearer <token>`, as a client's
/// [`bearer_token`](crate::client::ClientBuilder::bearer_token) sends),
/// checked against a static set ([`Auth::token`]) or by a function of
/// yours ([`Auth::token_check`]), or, with [`Auth::client_certs`], by the
/// verified certificate of a mutual-TLS connection. Each way gives the
/// caller a *principal* name: the one given with the token, the one your
/// function returns, or each of the certificate's names (subject, DNS and
/// URI SANs, such as a SPIFFE id).
///
/// Allow rules ([`Auth::allow`]) then say which principals may call which
/// methods. Without any rule every known caller may call every method;
/// with rules, a method no rule matches is refused to everyone.
///
/// A caller that presents nothing usable is answered `UNAUTHENTICATED`
/// (16); a known caller a rule does not allow, `PERMISSION_DENIED` (7).
/// Filters run before the body is decompressed or decoded, so a refused
/// request costs nothing of its body, and a hostile body is never parsed.
/// Tokens are compared in constant time. Methods made public with
/// [`Auth::public`] skip all of it; the health service
/// (`syncrpc.Health`) is public unless [`Auth::protect_health`] is set, so
/// that probes need no credentials.
///
/// # Examples
///
/// ```
/// use syncrpc::filters::Auth;
/// use syncrpc::{Server, Service};
///
/// let auth = Auth::new()
///     .token("s3cret-ops-token", "ops")
///     .client_certs(true)
///     .allow("/admin.Admin/*", ["ops"])
///     .allow("/echo.Echo/*", ["ops", "spiffe://prod/frontend"]);
/// let server = Server::builder()
///     .service(Service::new("echo.Echo"))
///     .filter(auth)
///     .bind("127.0.0.1:0")?;
/// server.shutdown();
/// # Ok::<(), syncrpc::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<(Vec<u8>, String)>,
    check: Option<Arc<TokenCheck>>,
    client_certs: bool,
    rules: Vec<(String, Vec<String>)>,
    public: Vec<String>,
    protect_health: bool,
}

type TokenCheck = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Auth {
    /// A filter that knows nobody yet: every call is refused until a way
    /// to know callers is added.
    pub fn new() -> Auth {
        Auth::default()
    }

    /// Accepts bearer token `token` as principal `principal`.
    pub fn token(mut self, token: impl AsRef<str>, principal: impl Into<String>) -> Auth {
        self.tokens
            .push((token.as_ref().as_bytes().to_vec(), principal.into()));
        self
    }

    /// Checks bearer tokens with `check`, which returns the caller's
    /// principal, or `None` to refuse the token. Tried after the static
    /// tokens. Compare secrets in constant time inside it.
    pub fn token_check(
        mut self,
        check: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Auth {
        self.check = Some(Arc::new(check));
        self
    }

    /// Knows callers by their verified client certificate (mutual TLS,
    /// `ServerTls::client_ca_file`, feature `tls`):
    /// each of its names is a principal. Default false.
    pub fn client_certs(mut self, accept: bool) -> Auth {
        self.client_certs = accept;
        self
    }

    /// Lets `principals` call the methods `pattern` names: a full method
    /// name (`/echo.Echo/Say`), a service's methods (`/echo.Echo/*`), or
    /// all (`*`). A principal `*` is any known caller. Rules add up.
    pub fn allow<S: Into<String>>(
        mut self,
        pattern: impl Into<String>,
        principals: impl IntoIterator<Item = S>,
    ) -> Auth {
        self.rules.push((
            pattern.into(),
            principals.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Lets anyone call the methods `pattern` names, with no credentials.
    pub fn public(mut self, pattern: impl Into<String>) -> Auth {
        self.public.push(pattern.into());
        self
    }

    /// Requires credentials for the health service too. Default false:
    /// probes call it without any.
    pub fn protect_health(mut self, protect: bool) -> Auth {
        self.protect_health = protect;
        self
    }

    /// The caller's principals, or why there are none.
    fn principals(&self, ctx: &Context) -> Result<Vec<String>, Status> {
        let mut found = Vec::new();
        if self.client_certs {
            if let Some(id) = ctx.peer().and_then(|p| p.identity()) {
                found.push(id.subject().to_owned());
                found.extend(id.dns_names().iter().cloned());
                found.extend(id.uris().iter().cloned());
            }
        }
        let header = ctx.metadata().get(Credentials::KEY);
        if let Some(value) = header {
            let token = value
                .as_str()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("authorization is not a bearer token"))?;
            match self.known_token(token) {
                Some(p) => found.push(p),
                None => return Err(Status::unauthenticated("invalid bearer token")),
            }
        }
        if found.is_empty() {
            return Err(Status::unauthenticated(if self.client_certs {
                "no credentials: send a bearer token or a client certificate"
            } else {
                "no credentials: send a bearer token"
            }));
        }
        Ok(found)
    }

    fn known_token(&self, token: &str) -> Option<String> {
        // Every static token is compared, in constant time, so the time
        // taken says nothing about which one (or how much of one) matched.
        let mut hit = None;
        for (known, principal) in &self.tokens {
            if constant_time_eq(known, token.as_bytes()) && hit.is_none() {
                hit = Some(principal.clone());
            }
        }
        hit.or_else(|| self.check.as_ref().and_then(|c| c(token)))
    }

    fn is_public(&self, method: &str) -> bool {
        if !self.protect_health && matches("/syncrpc.Health/*", method) {
            return true;
        }
        self.public.iter().any(|p| matches(p, method))
    }

    fn allowed(&self, method: &str, principals: &[String]) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        self.rules.iter().any(|(pattern, who)| {
            matches(pattern, method)
                && who
                    .iter()
                    .any(|w| w == "*" || principals.iter().any(|p| p == w))
        })
    }
}

impl Filter for Auth {
    fn call(&self, ctx: &Context, req: Request, next: Next<'_>) -> Reply {
        let method = ctx.method();
        if self.is_public(method) {
            return next.run(ctx, req);
        }
        let principals = match self.principals(ctx) {
            Ok(p) => p,
            Err(status) => {
                log::debug!("{method}: refused: {}", status.message());
                return Err(status);
            }
        };
        if !self.allowed(method, &principals) {
            log::debug!("{method}: {principals:?} not allowed");
            return Err(Status::permission_denied(format!(
                "{method} is not allowed to this caller"
            )));
        }
        next.run(ctx, req)
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("token_check", &self.check.is_some())
            .field("client_certs", &self.client_certs)
            .field("rules", &self.rules)
            .field("public", &self.public)
            .finish()
    }
}

/// Whether method pattern `pattern` names `method`.
fn matches(pattern: &str, method: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => method.starts_with(prefix),
        None => pattern == method,
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_methods_services_or_everything() {
        assert!(matches("*", "/a.B/C"));
        assert!(matches("/a.B/*", "/a.B/C"));
        assert!(!matches("/a.B/*", "/a.Bx/C"));
        assert!(matches("/a.B/C", "/a.B/C"));
        assert!(!matches("/a.B/C", "/a.B/Cd"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
