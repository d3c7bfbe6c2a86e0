//! TLS set-up with rustls and its ring provider: certificate and key files
//! for servers, a CA file for clients.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS configuration could not be built; the message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(ServerTls::load(cert, key)?.config())
}

/// A server's certificate that can be replaced while it serves (a renewed
/// certificate, on SIGHUP): connections already open keep theirs, new
/// handshakes get the new one.
#[derive(Debug)]
pub struct ServerTls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

/// The certificate handed to each new handshake.
#[derive(Debug)]
struct Current(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Current {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl ServerTls {
    /// Reads and checks the PEM certificate chain and private key.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let current = Arc::new(Current(std::sync::RwLock::new(certified_key(cert, key)?)));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS set-up failed: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        Ok(ServerTls { cert: cert.to_owned(), key: key.to_owned(), current, config: Arc::new(config) })
    }

    /// The configuration to serve with; it follows [`ServerTls::reload`].
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Reads the same two files again and, if they form a usable pair,
    /// serves new handshakes with them; otherwise keeps the current ones
    /// and says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.cert, &self.key)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// The certificate chain and key, checked: not a CA's certificate, and the
/// key the certificate's.
fn certified_key(cert: &Path, key_path: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    // A CA's certificate as the server's own: TLS libraries refuse it
    // (rustls: CaUsedAsEndEntity), which a client reports far from here.
    if x509_parser::parse_x509_certificate(&certs[0]).is_ok_and(|(_, c)| c.is_ca()) {
        return Err(TlsError(format!(
            "the first certificate in {} is a CA's (basicConstraints CA:TRUE), which clients refuse as a server's; \
             give the server's own certificate, issued by that CA (docs/GATEWAY.md shows how to make one)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        TlsError(format!("cannot read a private key from {}: {e}; give a PEM file holding the key", key_path.display()))
    })?;
    match rustls::sign::CertifiedKey::from_der(certs, key, &provider()) {
        Ok(k) => Ok(Arc::new(k)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError(format!(
            "the key in {} is not the one of the certificate in {} (the key of another certificate?); \
             give the key the certificate was made for",
            key_path.display(),
            cert.display()
        ))),
        Err(e) => Err(TlsError(format!("the certificate and key do not form a usable pair: {e}"))),
    }
}

/// A client configuration trusting the certificates in a PEM file.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| TlsError(format!("{} holds a certificate rustls cannot use as a root: {e}", ca.display())))?;
    }
    client_config_with_roots(roots)
}

/// A client configuration trusting the system's root certificates (read
/// once per process): what `tls://` and `wss://` use when no CA file is
/// given.
pub fn system_roots() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    static ROOTS: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                return Err(format!(
                    "found no root certificates on this system{why}; install them (Debian: ca-certificates) \
                     or give the server's CA certificate (--ca FILE)"
                ));
            }
            client_config_with_roots(roots).map_err(|e| e.0)
        })
        .clone()
        .map_err(TlsError)
}

/// A client configuration trusting the given DER certificates (tests, embedding).
pub fn client_config_with_roots(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Writes `files` into a fresh directory; returns their paths.
    fn write(files: &[(&str, String)]) -> Vec<std::path::PathBuf> {
        let dir = std::env::temp_dir().join(format!("tether-tls-{}-{}", std::process::id(), files[0].0));
        std::fs::create_dir_all(&dir).unwrap();
        files
            .iter()
            .map(|(name, text)| {
                let p = dir.join(name);
                std::fs::write(&p, text).unwrap();
                p
            })
            .collect()
    }

    /// The mistakes users make with certificates are refused at set-up,
    /// with the fix: the CA's certificate given as the server's, and a key
    /// that is not the certificate's. The CA's leaf with its key works.
    #[test]
    fn a_ca_certificate_as_the_servers_or_a_key_of_another_is_refused() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let p = write(&[
            ("ca.pem", ca.pem()),
            ("leaf.pem", leaf.pem()),
            ("leaf.key", leaf_key.serialize_pem()),
            ("other.key", other_key.serialize_pem()),
        ]);
        let e = server_config(&p[0], &p[2]).unwrap_err().to_string();
        assert!(e.contains("is a CA's") && e.contains("issued by that CA"), "{e}");
        let e = server_config(&p[1], &p[3]).unwrap_err().to_string();
        assert!(e.contains("is not the one of the certificate") && e.contains("other.key"), "{e}");
        server_config(&p[1], &p[2]).expect("the CA's leaf and its key");
        // A reload with broken files keeps the certificate being served.
        let t = ServerTls::load(&p[1], &p[2]).unwrap();
        std::fs::write(&p[2], other_key.serialize_pem()).unwrap();
        assert!(t.reload().unwrap_err().to_string().contains("is not the one of the certificate"));
        std::fs::write(&p[2], leaf_key.serialize_pem()).unwrap();
        t.reload().unwrap();
        std::fs::remove_dir_all(p[0].parent().unwrap()).unwrap();
    }
}
