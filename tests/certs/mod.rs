//! Certificates made at test time (rcgen): a CA, and servers and clients it signs, valid, expired or for another
//! name, written as PEM files for Mosquitto, `openssl s_server` and the daemon's configuration.
#![allow(dead_code)] // each test crate uses its own subset

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, as the daemon's `ca_file`.
    pub ca_file: PathBuf,
}

/// A certificate and its key, as files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Valid through 2020 only.
    Expired,
}

impl Authority {
    pub fn new(dir: &Path, name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        fs::write(&ca_file, certificate.pem()).unwrap();
        Authority {
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// A server certificate for `names` (host names or IP addresses).
    pub fn server(&self, dir: &Path, stem: &str, names: &[&str], validity: Validity) -> Issued {
        self.issue(
            dir,
            stem,
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    pub fn client(&self, dir: &Path, stem: &str, validity: Validity) -> Issued {
        self.issue(
            dir,
            stem,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = match validity {
            Validity::Current => date_time_ymd(2100, 1, 1),
            Validity::Expired => date_time_ymd(2021, 1, 1),
        };
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        fs::write(&issued.cert, certificate.pem()).unwrap();
        fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}
