//! Access tokens for Azure's own clients (clients.md §2): `az login
//! --service-principal` and managed-identity login trade a netwatch client
//! token for an access token, which must look like an Azure AD one (a JWT
//! with a `tid` claim: az decodes it, unverified, at login).
//!
//! netwatch signs them itself with HMAC-SHA256 under a key only the
//! controller holds, so they need no state and survive restarts (when the key
//! is kept in a file, as `netwatch up` does). A token names the digest of the
//! client token it was issued for, and is only accepted while that client
//! token still is: revoking the client token revokes what it was traded for.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long an access token is good for: an hour, as Azure AD's.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The fixed JWT header: `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the controller's token endpoint authority.
    pub iss: String,
    /// Tenant id; az reads it at login.
    pub tid: String,
    /// Object id of the caller: the client token's digest, shortened.
    pub oid: String,
    /// The digest (`sha256:…`) of the client token this token was issued for.
    pub sub: String,
    /// Audience as asked (`https://management.core.windows.net/`).
    pub aud: String,
    /// Issued at and expiry, seconds since the epoch.
    pub iat: u64,
    pub exp: u64,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.write_str("Signer { .. }")
    }
}

/// A signing key file that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("the token signing key is not 64 hex digits (32 bytes): make one with `netwatch up` or `openssl rand -hex 32`")]
pub struct BadKey;

impl Signer {
    /// A signer with `key` (64 hex digits, surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, BadKey> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(BadKey);
        }
        let mut key = [0_u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or(BadKey)?, 16).map_err(|_| BadKey)?;
        }
        Ok(Self { key })
    }

    /// A signer with a fresh random key: its tokens die with the process.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0_u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// A signed access token with `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims always serialize");
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The claims of `token` when this signer signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        if URL_SAFE_NO_PAD.decode(header).ok()? != HEADER.as_bytes() {
            return None;
        }
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        // Constant-time comparison (Mac::verify_slice).
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now_secs()).then_some(claims)
    }
}

impl Signer {
    /// HMAC-SHA256 of `fields` (each length-prefixed, so no two lists sign
    /// alike), URL-safe base64: the signature of a grant.
    pub fn sign_fields(&self, fields: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(self.fields_mac(fields).finalize().into_bytes())
    }

    /// Whether `signature` is [`Signer::sign_fields`] of `fields` (in constant time).
    pub fn verify_fields(&self, fields: &[&str], signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|bytes| self.fields_mac(fields).verify_slice(&bytes).is_ok())
    }

    fn fields_mac(&self, fields: &[&str]) -> Hmac<Sha256> {
        let mut mac = self.mac();
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: "https://127.0.0.1:8443/t/v2.0".into(),
            tid: "t".into(),
            oid: "o".into(),
            sub: "sha256:00".into(),
            aud: "https://management.core.windows.net/".into(),
            iat: 1,
            exp,
        }
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_until_they_expire() {
        let signer = Signer::random().unwrap();
        let good = claims(now_secs() + 60);
        let token = signer.issue(&good);
        assert_eq!(token.matches('.').count(), 2);
        assert_eq!(signer.verify(&token), Some(good.clone()));
        assert_eq!(Signer::random().unwrap().verify(&token), None, "another key");
        assert_eq!(signer.verify(&signer.issue(&claims(now_secs() - 1))), None, "expired");
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0_u8; 32]));
        assert_eq!(signer.verify(&forged), None, "forged signature");
        let mut other = good;
        other.sub = "sha256:11".into();
        let swapped = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap()),
            token.rsplit_once('.').unwrap().1
        );
        assert_eq!(signer.verify(&swapped), None, "payload changed under the signature");
        assert_eq!(signer.verify("not-a-jwt"), None);
    }

    #[test]
    fn keys_are_64_hex_digits() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert!(Signer::from_hex(&format!("{hex}\n")).is_ok());
        assert!(Signer::from_hex("abc").is_err());
        assert!(Signer::from_hex(&hex.replace('0', "g")).is_err());
    }
}
