//! Certificates and keys for the test control plane, generated in process (no openssl).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use super::Error;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// The certificate authority of one control plane: it signs the apiserver's serving certificate and the client
/// certificates tests authenticate with (`--client-ca-file`).
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Result<Self, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("databricks-oauth-operator test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(pki_err)?).map_err(pki_err)?;
        Ok(Self { ca })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A serving certificate for loopback.
    pub fn serving_cert(&self) -> Result<CertPair, Error> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "kubernetes.default.svc".to_owned()])
                .map_err(pki_err)?;
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name = dn("kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params)
    }

    /// A client certificate: the apiserver authenticates it as user `user` in `groups` (CN and O).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertPair, Error> {
        let mut params = CertificateParams::default();
        let mut name = dn(user);
        for group in groups {
            name.push(DnType::OrganizationName, *group);
        }
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<CertPair, Error> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let cert = params.signed_by(&key, &self.ca).map_err(pki_err)?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A fresh ECDSA P-256 key for signing ServiceAccount tokens (ES256): (private key as PKCS#8 PEM, public key
/// PEM). The apiserver reads verification keys only from public-key PEM.
pub fn service_account_key() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(pki_err)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn pki_err(err: rcgen::Error) -> Error {
    Error::Pki(err.to_string())
}
