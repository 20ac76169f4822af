//! GitHub App authentication: the RS256 JWT and the credentials a client holds.

use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::Secret;

/// JWT claims of a GitHub App: `iat` 60 s in the past (clock drift), `exp` 9 minutes ahead
/// (GitHub allows at most 10).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppClaims {
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// App id (or client id).
    pub iss: String,
}

impl AppClaims {
    /// Claims for a JWT signed at `now` (seconds since the epoch).
    pub fn at(app_id: &str, now: i64) -> Self {
        Self {
            iat: now - 60,
            exp: now + 540,
            iss: app_id.to_owned(),
        }
    }
}

/// A GitHub App's id and private key. `Debug` shows the id only.
#[derive(Clone)]
pub struct AppKey {
    app_id: String,
    key: EncodingKey,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKey")
            .field("app_id", &self.app_id)
            .field("key", &"***")
            .finish()
    }
}

impl AppKey {
    /// Loads the private key from a PEM file (PKCS#1 or PKCS#8, as GitHub hands it out).
    pub fn from_pem_file(app_id: impl Into<String>, path: &Path) -> Result<Self, AuthError> {
        let pem = std::fs::read(path).map_err(|source| AuthError::ReadKey {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem_labelled(app_id.into(), &pem, path)
    }

    /// Uses a PEM key held in memory.
    pub fn from_pem(app_id: impl Into<String>, pem: &[u8]) -> Result<Self, AuthError> {
        Self::from_pem_labelled(app_id.into(), pem, Path::new("<memory>"))
    }

    fn from_pem_labelled(app_id: String, pem: &[u8], path: &Path) -> Result<Self, AuthError> {
        let key = EncodingKey::from_rsa_pem(pem).map_err(|source| AuthError::BadKey {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { app_id, key })
    }

    /// The App id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// A JWT valid from `now - 60` to `now + 540`.
    pub fn jwt_at(&self, now: i64) -> Result<Secret, AuthError> {
        let claims = AppClaims::at(&self.app_id, now);
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(AuthError::Sign)
    }

    /// A JWT signed now.
    pub fn jwt(&self) -> Result<Secret, AuthError> {
        self.jwt_at(chrono::Utc::now().timestamp())
    }
}

/// What the client authenticates with.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A GitHub App installation (recommended): short-lived tokens, narrowable per job.
    App {
        /// The App.
        key: AppKey,
        /// The installation on the organisation or repository.
        installation_id: u64,
    },
    /// A personal access token (fallback): long-lived, cannot be narrowed per job.
    Token(Secret),
}
