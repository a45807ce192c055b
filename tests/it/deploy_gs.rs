//! `gs://` sources (stretcher reads Google Cloud Storage), with credentials the way
//! Google's libraries find them: a service account's key file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`.
//!
//! The server is a fake of the Cloud Storage XML API's object download, built from its
//! documentation (<https://cloud.google.com/storage/docs/xml-api/get-object-download>,
//! `reference-headers`, `xml-api/reference-status`). gcp-storage-emulator from PyPI was
//! tried first: its download answers without `Last-Modified`, which the API documents and
//! object_store needs, so every GET failed ("Last-Modified Header missing from response").
//! The fake checks what the real service checks for a service account: a self-signed
//! JWT (RS256, `kid` = the key's id, `iss` = `sub` = the account, a storage scope, not
//! expired) whose signature verifies with the account's public key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::deploy::{Sandbox, TEST_TAR_SHA1, agent};

const ACCOUNT: &str = "deployer@corral-test.iam.gserviceaccount.com";
const KEY_ID: &str = "0123456789abcdef";

struct Gcs {
    objects: HashMap<String, Vec<u8>>,
    public_key: PathBuf,
    dir: PathBuf,
}

/// Starts the fake on a free loopback port; returns its base URL.
async fn start_gcs(gcs: Gcs) -> String {
    let app = axum::Router::new()
        .route("/{bucket}/{*key}", axum::routing::get(download))
        .with_state(Arc::new(gcs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The XML API's error document.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        status,
        [("content-type", "application/xml; charset=UTF-8")],
        body,
    )
        .into_response()
}

async fn download(
    State(gcs): State<Arc<Gcs>>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer else {
        return error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequired",
            "Authentication required.",
        );
    };
    if let Err(why) = verify_jwt(&gcs, token) {
        return error(StatusCode::UNAUTHORIZED, "InvalidAuthentication", &why);
    }
    let Some(body) = gcs.objects.get(&format!("{bucket}/{key}")) else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    (
        StatusCode::OK,
        [
            ("content-type", "application/octet-stream".to_string()),
            ("content-length", body.len().to_string()),
            ("last-modified", "Wed, 02 Dec 2026 10:00:00 GMT".to_string()),
            ("etag", "\"5d41402abc4b2a76b9719d911017c592\"".to_string()),
            ("x-goog-generation", "1764669600000000".to_string()),
            ("x-goog-metageneration", "1".to_string()),
            ("x-goog-stored-content-length", body.len().to_string()),
        ],
        body.clone(),
    )
        .into_response()
}

/// A self-signed service account JWT, checked as Google documents it (AIP-4111).
fn verify_jwt(gcs: &Gcs, token: &str) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a JWT".into());
    };
    let json = |part: &str| -> Result<serde_json::Value, String> {
        let bytes = b64.decode(part).map_err(|e| format!("base64: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("json: {e}"))
    };
    let (h, c) = (json(header)?, json(claims)?);
    if h["alg"] != "RS256" || h["kid"] != KEY_ID {
        return Err(format!("header {h}"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let scope_ok = c["scope"]
        .as_str()
        .is_some_and(|s| s.contains("cloud-platform") || s.contains("devstorage"));
    if c["iss"] != ACCOUNT || c["sub"] != ACCOUNT || !scope_ok || c["exp"].as_u64() <= Some(now) {
        return Err(format!("claims {c}"));
    }
    let sig = b64.decode(signature).map_err(|e| format!("base64: {e}"))?;
    // Unique names: requests may be checked concurrently.
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let (data_file, sig_file) = (
        gcs.dir.join(format!("jwt-{n}")),
        gcs.dir.join(format!("sig-{n}")),
    );
    std::fs::write(&data_file, format!("{header}.{claims}")).map_err(|e| e.to_string())?;
    std::fs::write(&sig_file, sig).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&gcs.public_key)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&data_file)
        .output()
        .map_err(|e| e.to_string())?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| "signature does not verify".to_string())
}

/// A service account key file as the Cloud console writes it, with a fresh RSA key
/// named `name`; returns (the key file, its public key in PEM).
fn service_account_key(dir: &Path, name: &str) -> (String, PathBuf) {
    let pem = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let openssl = |args: &[&str]| crate::support::tls::openssl(dir, args);
    let (pem_s, public_s) = (pem.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        pem_s,
    ]);
    openssl(&["pkey", "-in", pem_s, "-pubout", "-out", public_s]);
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "corral-test",
        "private_key_id": KEY_ID,
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "client_email": ACCOUNT,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, key.to_string()).unwrap();
    (path.to_string_lossy().into_owned(), public)
}

#[tokio::test]
async fn gs_manifest_and_src_with_application_credentials() {
    let sb = Sandbox::new("gs");
    let (creds, public_key) = service_account_key(&sb.dir, "deployer");
    let manifest = format!(
        "src: gs://releases/app/v1/test.tar\nchecksum: {TEST_TAR_SHA1}\ndest: {}\n",
        sb.dest.display()
    );
    let objects = HashMap::from([
        (
            "releases/app/v1/test.tar".to_string(),
            std::fs::read(sb.dir.join("testdata/test.tar")).unwrap(),
        ),
        (
            "releases/app/v1/deploy.yml".to_string(),
            manifest.into_bytes(),
        ),
    ]);
    let gcs = start_gcs(Gcs {
        objects,
        public_key,
        dir: sb.dir.clone(),
    })
    .await;
    let env = [
        ("GOOGLE_APPLICATION_CREDENTIALS", creds.as_str()),
        ("GOOGLE_BASE_URL", gcs.as_str()),
    ];
    let r = agent(&sb.dir, "gs://releases/app/v1/deploy.yml\n", &[], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("dest/foo/baz").as_deref(), Some("baz\n"));

    // A missing object is a clear fetch error naming the URL.
    let r = agent(&sb.dir, "gs://releases/app/v2/deploy.yml\n", &[], &env).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("load manifest failed: GET gs://releases/app/v2/deploy.yml"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.to_lowercase().contains("not found"),
        "{}",
        r.stderr
    );

    // Another account's key is refused by the server, and that is a fetch error too.
    let (other, _) = service_account_key(&sb.dir, "intruder");
    let env = [
        ("GOOGLE_APPLICATION_CREDENTIALS", other.as_str()),
        ("GOOGLE_BASE_URL", gcs.as_str()),
    ];
    let r = agent(&sb.dir, "gs://releases/app/v1/deploy.yml\n", &[], &env).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("load manifest failed: GET gs://releases/app/v1/deploy.yml"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn gs_with_broken_credentials_fails_clearly_and_touches_nothing() {
    let sb = Sandbox::new("gs-creds");
    let (_, public_key) = service_account_key(&sb.dir, "deployer");
    let objects = HashMap::from([(
        "releases/m.yml".to_string(),
        b"src: gs://releases/a.tar\nchecksum: 00\ndest: /x\n".to_vec(),
    )]);
    let gcs = start_gcs(Gcs {
        objects,
        public_key,
        dir: sb.dir.clone(),
    })
    .await;
    let missing = sb.dir.join("no-such-key.json");
    let garbage = sb.dir.join("garbage.json");
    std::fs::write(
        &garbage,
        "{\"type\": \"service_account\", \"private_key\": \"nope\"",
    )
    .unwrap();
    for creds in [&missing, &garbage] {
        let env = [
            ("GOOGLE_APPLICATION_CREDENTIALS", creds.to_str().unwrap()),
            ("GOOGLE_BASE_URL", gcs.as_str()),
        ];
        let r = agent(&sb.dir, "gs://releases/m.yml\n", &[], &env).await;
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("gs://releases/m.yml: Google Cloud Storage configuration"),
            "{creds:?}: {}",
            r.stderr
        );
        // The key file's bytes are never quoted.
        assert!(!r.stderr.contains("nope"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
    // No bucket or no key: refused before any request.
    for url in ["gs:///m.yml", "gs://releases/"] {
        let r = agent(&sb.dir, &format!("{url}\n"), &[], &[]).await;
        assert_eq!(r.code, 1, "{url}: {}", r.stderr);
        assert!(
            r.stderr.contains("no bucket") || r.stderr.contains("no object key"),
            "{url}: {}",
            r.stderr
        );
    }
}
