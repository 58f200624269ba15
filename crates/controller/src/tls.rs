//! Certificates for the embedded default: `netwatch up` makes its own CA and
//! a server certificate signed by it, so clients (the CLI, az, the Azure SDK,
//! agents) trust one file, the CA, instead of skipping verification
//! (clients.md §1.2, §5.1).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a fresh CA and a server certificate it signed.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate: what clients trust.
    pub ca_pem: String,
    /// The server certificate followed by the CA's (the chain the server sends).
    pub chain_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// A CA named after `name` and a server certificate for `hosts` (DNS names or
/// IP addresses, each a subject alternative name).
pub fn make_pki(name: &str, hosts: &[String]) -> Result<Pki, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
    })
}

/// What a host needs to trust the controller before it has anything of it
/// (the agent installer, `vm extension set`): the pin of its certificate's
/// key, as `curl --pinnedpubkey` takes it, and the CA certificates to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// `sha256//` and the base64 SHA-256 of the leaf's SubjectPublicKeyInfo.
    pub pin: String,
    /// PEM of the chain's certificates after the leaf (the leaf itself when
    /// it is alone, self-signed).
    pub ca_pem: String,
}

/// Why the certificate chain gives no [`Trust`].
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("read the certificate chain {path}: {message}")]
    Read { path: std::path::PathBuf, message: String },
    #[error("the certificate chain {path} holds no certificate")]
    Empty { path: std::path::PathBuf },
    #[error("the first certificate of {path} does not parse: {message}")]
    Leaf { path: std::path::PathBuf, message: String },
}

/// The [`Trust`] of the PEM chain at `path` (the server's certificate first).
pub fn trust(path: &std::path::Path) -> Result<Trust, TrustError> {
    use base64::Engine as _;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    use sha2::Digest as _;

    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<_, _>>())
        .map_err(|err| TrustError::Read {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
    let Some(leaf) = certificates.first() else {
        return Err(TrustError::Empty { path: path.to_owned() });
    };
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|err| TrustError::Leaf {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let spki = parsed.subject_public_key_info();
    let pin = format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki.as_ref()))
    );
    let anchors = if certificates.len() > 1 {
        &certificates[1..]
    } else {
        &certificates[..]
    };
    let ca_pem = anchors.iter().map(|der| pem_of(der.as_ref())).collect();
    Ok(Trust { pin, ca_pem })
}

/// A DER certificate as PEM.
fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
