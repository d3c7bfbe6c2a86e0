//! Login as identity providers do it: tokens signed with RS256/384/512,
//! PS256/384/512, ES256/384 or EdDSA, checked against the provider's JSON
//! Web Key Set (`auth.jwks_url`). The set is fetched at start, then again
//! every `auth.jwks_refresh`, and at once (at most every 10 s) when a token
//! names a key the gateway does not have yet: a provider rotating its keys
//! is followed without a restart. A failed fetch keeps the keys already
//! known.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Notify;

/// Shortest time between two fetches asked for by unknown keys.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One verification key of the set.
pub(crate) struct Key {
    kid: Option<String>,
    /// The algorithm the set pins for it, if any.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The keys of one JWKS URL, kept fresh by [`Jwks::spawn_refresh`].
pub(crate) struct Jwks {
    url: String,
    keys: RwLock<Arc<Vec<Key>>>,
    /// Why the last fetch failed, if it did (shown to refused clients).
    last_error: RwLock<Option<String>>,
    wake: Notify,
}

impl Jwks {
    pub(crate) fn new(url: String) -> Arc<Self> {
        Arc::new(Jwks { url, keys: RwLock::default(), last_error: RwLock::default(), wake: Notify::new() })
    }

    /// The keys that may verify a token signed with `alg` naming `kid`.
    /// None found: a fetch is asked for, and the reason is returned.
    pub(crate) fn keys_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<DecodingKey>, String> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let found: Vec<DecodingKey> = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.alg.is_none_or(|a| a == alg))
            .map(|k| k.key.clone())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
        self.wake.notify_one();
        let why = self.last_error.read().unwrap_or_else(|p| p.into_inner()).clone();
        Err(match (kid, why) {
            (_, Some(e)) if keys.is_empty() => {
                format!("the gateway cannot check tokens now (its key set could not be fetched: {e}); retry later")
            }
            (Some(kid), _) => format!(
                "the token's signing key (kid {kid:?}, {alg:?}) is not in the gateway's key set; \
                 if the provider just rotated its keys, retry in a few seconds"
            ),
            (None, _) => format!("no key of the gateway's key set verifies {alg:?} tokens"),
        })
    }

    /// Fetches now, then every `refresh`, and when a token names an unknown
    /// key (at most every 10 s). Stops when the gateway's runtime does.
    pub(crate) fn spawn_refresh(self: &Arc<Self>, refresh: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
                Ok(c) => c,
                Err(e) => return tracing::error!(%e, "cannot make the HTTP client for auth.jwks_url"),
            };
            loop {
                let at = tokio::time::Instant::now();
                me.fetch(&client).await;
                let regular = at + refresh;
                tokio::select! {
                    () = tokio::time::sleep_until(regular) => {}
                    // An unknown key: fetch soon, but not within 10 s of the
                    // last fetch (tokens naming made-up keys must not turn
                    // the gateway into a flood of requests to the provider).
                    () = me.wake.notified() => tokio::time::sleep_until(regular.min(at + MIN_REFETCH)).await,
                }
            }
        });
    }

    async fn fetch(&self, client: &reqwest::Client) {
        let got = async {
            let r = client.get(&self.url).send().await.map_err(|e| format!("{e}"))?;
            if !r.status().is_success() {
                return Err(format!("HTTP {}", r.status()));
            }
            let body = r.bytes().await.map_err(|e| format!("{e}"))?;
            serde_json::from_slice::<JwkSet>(&body).map_err(|e| format!("not a JSON Web Key Set ({e})"))
        }
        .await;
        match got {
            Ok(set) => {
                let keys = parse(&set);
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS not fetched; keeping the keys already known");
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
    }
}

/// The signature keys of a set; symmetric keys and those of other uses are
/// left out (a key set is public: an HMAC key in it would let anyone sign).
fn parse(set: &JwkSet) -> Vec<Key> {
    use jsonwebtoken::jwk::{AlgorithmParameters as P, PublicKeyUse};
    set.keys
        .iter()
        .filter(|j| !matches!(j.algorithm, P::OctetKey(_)))
        .filter(|j| !matches!(j.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|j| {
            let alg = match j.common.key_algorithm {
                None => None,
                Some(a) => Some(asymmetric(a)?),
            };
            match DecodingKey::from_jwk(j) {
                Ok(key) => Some(Key { kid: j.common.key_id.clone(), alg, key }),
                Err(e) => {
                    tracing::warn!(kid = ?j.common.key_id, %e, "JWKS key skipped");
                    None
                }
            }
        })
        .collect()
}

/// The signature algorithm a set's `alg` names, if asymmetric.
fn asymmetric(a: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match a {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// True for the algorithms a key set may verify.
pub(crate) fn is_asymmetric(a: Algorithm) -> bool {
    !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let p = format!("{}/../../fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// A key set is public: an HMAC key in it, or a key pinned to an HMAC
    /// algorithm, would let anyone sign tokens. Both are left out.
    #[test]
    fn symmetric_and_encryption_keys_of_a_set_are_left_out() {
        let mut hmac_pinned = fixture("jwk-a.json");
        hmac_pinned["alg"] = "HS256".into();
        hmac_pinned["kid"] = "pinned".into();
        let mut enc = fixture("jwk-b.json");
        enc["use"] = "enc".into();
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
            hmac_pinned, enc, fixture("jwk-a.json"), fixture("jwk-c.json"),
        ]}))
        .unwrap();
        let keys = parse(&set);
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap_or_default()).collect();
        assert_eq!(kids, ["a", "c"]);
        assert!(!is_asymmetric(Algorithm::HS256) && is_asymmetric(Algorithm::RS256));
    }
}
