//! Who may call the node's HTTP API: bearer tokens with two scopes, separate from the cluster
//! secret that authenticates node-to-node traffic.
//!
//! - **client** (`--client-token`): the key-value API and `/status`;
//! - **admin** (`--admin-token`): the admin endpoints (and `/bench/load` when enabled), and
//!   everything a client may do.
//!
//! A handler states its scope in its signature with the [`ClientAccess`] or [`AdminAccess`]
//! extractor (its first parameter), so no handler runs unchecked.
//! A request carries `Authorization: Bearer <token>`; tokens are compared in constant time. Without
//! a valid token the answer is 401 (with `WWW-Authenticate: Bearer`); a client token on an admin
//! endpoint gets 403. A node started without any token serves the API to anyone who reaches it:
//! [`crate::args::Args::validate`] allows that only on a loopback listener, or with
//! `--allow-open-api`. `/healthz` and `/readyz` are always open (orchestrators probe them).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use subtle::ConstantTimeEq;

/// What an endpoint requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Reads and writes of keys, status.
    Client,
    /// Cluster administration.
    Admin,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// A token that is neither the client nor the admin token.
    #[error("invalid bearer token")]
    Invalid,
    /// The client token on an admin endpoint.
    #[error("this endpoint needs the admin token")]
    NeedsAdmin,
}

impl Refusal {
    /// The answer: 401 with `WWW-Authenticate: Bearer`, or 403.
    pub fn response(self) -> HttpResponse {
        match self {
            Refusal::NeedsAdmin => HttpResponse::Forbidden().body(self.to_string()),
            Refusal::Missing | Refusal::Invalid => {
                HttpResponse::Unauthorized().insert_header((header::WWW_AUTHENTICATE, "Bearer")).body(self.to_string())
            }
        }
    }
}

impl ResponseError for Refusal {
    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

/// Checks the request's bearer token against the [`ApiTokens`] the app registered (as
/// `web::Data<ApiTokens>`): a handler taking it runs only for a client (or admin) token. Place it
/// first, so a refused request is refused before anything else about it is looked at.
pub struct ClientAccess;

/// Like [`ClientAccess`], for the admin scope.
pub struct AdminAccess;

/// The check both extractors make; without registered tokens every request is refused.
fn access(request: &HttpRequest, scope: Scope) -> Result<(), Refusal> {
    match request.app_data::<web::Data<ApiTokens>>() {
        Some(tokens) => tokens.check(request, scope),
        None => Err(Refusal::Invalid),
    }
}

impl FromRequest for ClientAccess {
    type Error = Refusal;
    type Future = std::future::Ready<Result<Self, Refusal>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(access(request, Scope::Client).map(|()| ClientAccess))
    }
}

impl FromRequest for AdminAccess {
    type Error = Refusal;
    type Future = std::future::Ready<Result<Self, Refusal>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(access(request, Scope::Admin).map(|()| AdminAccess))
    }
}

/// The API tokens of a node (the same on every node of a cluster: requests are forwarded).
#[derive(Clone, Debug, Default)]
pub struct ApiTokens {
    client: Option<String>,
    admin: Option<String>,
}

impl ApiTokens {
    /// Tokens for the client and admin scopes (`None`: no token of that scope).
    pub fn new(client: Option<String>, admin: Option<String>) -> Self {
        ApiTokens { client, admin }
    }

    /// True when no token is configured: the API is open.
    pub fn is_open(&self) -> bool {
        self.client.is_none() && self.admin.is_none()
    }

    /// Let `request` through to an endpoint of `scope`, or say why not.
    pub fn check(&self, request: &HttpRequest, scope: Scope) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Refusal::Missing);
        };
        let matches = |token: &Option<String>| {
            token.as_ref().is_some_and(|token| bool::from(token.as_bytes().ct_eq(presented.as_bytes())))
        };
        if matches(&self.admin) {
            return Ok(());
        }
        if matches(&self.client) {
            return match scope {
                Scope::Client => Ok(()),
                Scope::Admin => Err(Refusal::NeedsAdmin),
            };
        }
        Err(Refusal::Invalid)
    }

    /// The `Authorization` value this node uses to forward a request of `scope` it accepted to
    /// another node (`None` when the API is open).
    pub fn forwarding_header(&self, scope: Scope) -> Option<String> {
        let token = match scope {
            Scope::Client => self.client.as_ref().or(self.admin.as_ref()),
            Scope::Admin => self.admin.as_ref(),
        };
        token.map(|token| format!("Bearer {token}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(token: Option<&str>) -> HttpRequest {
        let request = TestRequest::default();
        match token {
            Some(token) => request.insert_header((header::AUTHORIZATION, token)).to_http_request(),
            None => request.to_http_request(),
        }
    }

    #[test]
    fn scopes_and_refusals() {
        let tokens = ApiTokens::new(Some("client-token".into()), Some("admin-token".into()));
        let status = |token, scope| match tokens.check(&request(token), scope) {
            Ok(()) => 200,
            Err(refusal) => refusal.response().status().as_u16(),
        };
        assert_eq!(status(None, Scope::Client), 401);
        assert_eq!(status(Some("Bearer wrong"), Scope::Client), 401);
        assert_eq!(status(Some("client-token"), Scope::Client), 401, "the Bearer scheme is required");
        assert_eq!(status(Some("Bearer client-token"), Scope::Client), 200);
        assert_eq!(status(Some("Bearer client-token"), Scope::Admin), 403);
        assert_eq!(status(Some("Bearer admin-token"), Scope::Admin), 200);
        assert_eq!(status(Some("Bearer admin-token"), Scope::Client), 200);
        assert_eq!(status(Some("Bearer admin-token-but-longer"), Scope::Admin), 401);
        assert_eq!(tokens.forwarding_header(Scope::Client).as_deref(), Some("Bearer client-token"));
        assert_eq!(tokens.forwarding_header(Scope::Admin).as_deref(), Some("Bearer admin-token"));
    }

    #[test]
    fn an_open_api_and_an_admin_only_node() {
        let open = ApiTokens::default();
        assert!(open.is_open());
        assert!(open.check(&request(None), Scope::Admin).is_ok());
        assert_eq!(open.forwarding_header(Scope::Client), None);
        let admin_only = ApiTokens::new(None, Some("admin-token".into()));
        assert_eq!(admin_only.check(&request(None), Scope::Client), Err(Refusal::Missing));
        assert!(admin_only.check(&request(Some("Bearer admin-token")), Scope::Client).is_ok());
    }
}
