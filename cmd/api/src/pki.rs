//! The cluster's certificate authority and the API server's serving certificate.
//!
//! At first start [`Pki::load_or_create`] makes a CA and a serving certificate signed by
//! it in `<data dir>/pki/` (`ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key`); later
//! starts read them back, so kubeconfigs made earlier keep working.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Errors making or reading the certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Generating a key or certificate.
    #[error("making certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The PEM files of the cluster's CA and the API server.
#[derive(Clone, Debug)]
pub struct Pki {
    /// CA certificate (PEM): what clients trust.
    pub ca_pem: String,
    /// Serving certificate (PEM).
    pub cert_pem: String,
    /// Serving key (PKCS#8 PEM).
    pub key_pem: String,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

impl Pki {
    /// The folder holding the files.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("pki")
    }

    /// Reads the CA and serving certificate from `data_dir/pki`, making them when absent.
    /// `hosts` are extra DNS names or IP addresses the serving certificate is valid for
    /// (`localhost`, `127.0.0.1` and `::1` always are).
    pub fn load_or_create(data_dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
        let dir = Pki::dir(data_dir);
        let files = ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key"].map(|f| dir.join(f));
        if files.iter().all(|f| f.exists()) {
            return Ok(Pki {
                ca_pem: read(&files[0])?,
                cert_pem: read(&files[2])?,
                key_pem: read(&files[3])?,
            });
        }
        tracing::info!(dir = %dir.display(), "making the cluster CA and API serving certificate");
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kommit-ca");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ];
        for h in hosts {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kommit-apiserver");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;

        let pki = Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        write_private(&files[1], &ca_key.serialize_pem())?;
        write_private(&files[3], &pki.key_pem)?;
        write_private(&files[2], &pki.cert_pem)?;
        write_private(&files[0], &pki.ca_pem)?;
        Ok(pki)
    }
}
