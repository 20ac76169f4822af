//! cosign signatures, verified with a public key.
//!
//! cosign stores an image's signature in the image's repository under the tag
//! `sha256-<hex of the signed manifest digest>.sig`: an OCI manifest whose layers are
//! "simple signing" payloads (`application/vnd.dev.cosign.simplesigning.v1+json`), each with
//! its signature, base64 DER ECDSA, in the annotation `dev.cosignproject.cosign/signature`.
//! The payload names the signed digest (`critical.image.docker-manifest-digest`). An image
//! is verified when one payload signed by the key names the digest being pulled.
//!
//! Why not the `sigstore` crate: key-based verification is the one check below (ECDSA P-256
//! over SHA-256, RustCrypto's `p256`), while `sigstore` brings a TUF client, Fulcio and Rekor
//! clients and their TLS stacks; keyless verification (Fulcio certificates, Rekor inclusion)
//! needs those services and is not offered (the policy refuses it rather than pretending).

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

/// The media type of a simple-signing payload.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A public key images must be signed with.
pub struct Key {
    key: VerifyingKey,
    /// `sha256:<hex>` of the key's DER: how records and errors name it.
    pub fingerprint: String,
}

impl Key {
    /// Reads a PEM public key (`cosign.pub`: ECDSA P-256).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| format!("not an ECDSA P-256 public key in PEM: {e}"))?;
        let der = key.to_encoded_point(false);
        Ok(Self {
            fingerprint: super::sha256_of(der.as_bytes()),
            key,
        })
    }

    /// Whether `signature_b64` is this key's signature of `payload` and the payload names
    /// `digest`. The reason when not.
    pub fn check(&self, payload: &[u8], signature_b64: &str, digest: &str) -> Result<(), String> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|_| "the signature is not base64".to_owned())?;
        let sig =
            Signature::from_der(&der).map_err(|_| "the signature is not DER ECDSA".to_owned())?;
        self.key
            .verify(payload, &sig)
            .map_err(|_| "the signature is not the key's".to_owned())?;
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| "the payload is not JSON".to_owned())?;
        let signed = v["critical"]["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or_default();
        if signed != digest {
            return Err(format!("the signature is for {signed}, not {digest}"));
        }
        Ok(())
    }
}

/// The tag cosign stores the signature of `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_p256_pem_is_refused() {
        assert!(Key::from_pem("not a key").is_err());
        assert!(
            Key::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err()
        );
    }

    #[test]
    fn signature_tags_follow_cosign() {
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
    }

    #[test]
    fn signatures_are_checked_against_key_and_digest() {
        use p256::ecdsa::signature::Signer as _;
        use p256::ecdsa::SigningKey;
        use p256::pkcs8::EncodePublicKey as _;
        // A deterministic key from fixed bytes (tests only).
        let sk = SigningKey::from_slice(&[7u8; 32]).expect("key");
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem");
        let key = Key::from_pem(&pem).expect("key");
        let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let sig: Signature = sk.sign(payload.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        assert_eq!(key.check(payload.as_bytes(), &b64, digest), Ok(()));
        // Another digest, another payload, another key: refused.
        let other = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        assert!(key.check(payload.as_bytes(), &b64, other).is_err());
        assert!(key.check(b"{}", &b64, digest).is_err());
        let sk2 = SigningKey::from_slice(&[9u8; 32]).expect("key");
        let pem2 = sk2
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem");
        let key2 = Key::from_pem(&pem2).expect("key");
        assert!(key2.check(payload.as_bytes(), &b64, digest).is_err());
    }
}
