//! A TLS front for a plain test server (the HTTPS a production Consul speaks), with a
//! throwaway certificate authority made by the `openssl` CLI (`./test` installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A CA and a server certificate it signed for `127.0.0.1` (as IP and as DNS name).
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs the `openssl` CLI in `dir`; a failure fails the test with its stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Makes `ca.pem`, `server.pem` and `server.key` in `dir` (files named `<name>-…`).
    pub fn new(dir: &Path, name: &str) -> Pki {
        let f = |s: &str| format!("{name}-{s}");
        #[rustfmt::skip]
        openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", &format!("/CN=corral test CA {name}"),
            "-keyout", &f("ca.key"), "-out", &f("ca.pem")]);
        #[rustfmt::skip]
        openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", &f("server.key"), "-out", &f("server.csr")]);
        std::fs::write(
            dir.join(f("ext.cnf")),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        #[rustfmt::skip]
        openssl(dir, &["x509", "-req", "-in", &f("server.csr"), "-CA", &f("ca.pem"),
            "-CAkey", &f("ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", &f("ext.cnf"), "-out", &f("server.pem")]);
        Pki {
            ca: dir.join(f("ca.pem")),
            cert: dir.join(f("server.pem")),
            key: dir.join(f("server.key")),
        }
    }
}

/// Listens on a free loopback port, ends TLS with `pki`'s server certificate and passes
/// the bytes to `upstream`; returns the port. Failed handshakes are counted as nothing:
/// the upstream never sees them.
pub async fn front(upstream: SocketAddr, pki: &Pki) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}
