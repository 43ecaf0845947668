//! The release's signatures (`tests/release-sign.sh`, what `make release --key` runs): a signed
//! release directory verifies with the public key, and a tampered artifact, a signature by
//! another key or a file slipped into the directory fails verification, naming what failed.
//! The key pairs are made for each test with openssl (ECDSA P-256), never committed.
//!
//! The directory holds the chart packaged by `helm package` (helm from `$TESTENV_STATE/bin`,
//! `make cluster-up` builds it) and the CRDs; `make release` adds the image and the SBOM, signed
//! the same way. `cosign_verifies_the_signatures` (ignored unless `COSIGN` names a cosign
//! binary) checks them with `cosign verify-blob`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CHART_TGZ: &str = "oneinbox-operator-0.1.0.tgz";
const CRDS: &str = "oneinbox-operator-crds.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> PathBuf {
    let state = std::env::var_os("TESTENV_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/testenv"));
    let helm = state.join("bin/helm");
    assert!(
        helm.exists(),
        "{} is missing: run `make cluster-up` (or `make test`)",
        helm.display()
    );
    helm
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A key pair (`<name>.pem`, `<name>.pub`) in `dir`, made with openssl.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    (key, public)
}

/// A release directory: the packaged chart and the CRDs in one file.
fn release_dir(root: &Path) -> PathBuf {
    let dir = root.join("release");
    std::fs::create_dir_all(&dir).unwrap();
    ok(Command::new(helm())
        .arg("package")
        .arg(repo().join("charts/oneinbox-operator"))
        .arg("-d")
        .arg(&dir));
    let mut crds = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        crds.push_str("---\n");
        crds.push_str(&std::fs::read_to_string(f).unwrap());
    }
    std::fs::write(dir.join(CRDS), crds).unwrap();
    dir
}

fn sign_script(args: &[&Path]) -> Output {
    run(Command::new(repo().join("tests/release-sign.sh"))
        .args(args)
        .env_remove("RELEASE_KEY_PASSWORD"))
}

fn sign(key: &Path, dir: &Path) {
    let out = sign_script(&[Path::new("sign"), key, dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `release-sign.sh verify`: Ok, or Err(its last line of stderr).
fn verify(public: &Path, dir: &Path) -> Result<(), String> {
    let out = sign_script(&[Path::new("verify"), public, dir]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    if out.status.success() {
        Ok(())
    } else {
        Err(last)
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_signed_release_verifies() {
    let root = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(root.path(), "release");
    let dir = release_dir(root.path());
    sign(&key, &dir);
    assert_eq!(
        file_names(&dir),
        [
            "SHA256SUMS",
            "SHA256SUMS.sig",
            CHART_TGZ,
            &format!("{CHART_TGZ}.sig"),
            CRDS,
            &format!("{CRDS}.sig"),
        ]
    );
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let listed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(listed, [CHART_TGZ, CRDS]);
    assert_eq!(
        verify(&public, &dir),
        Ok(()),
        "the release must verify with its own key"
    );
}

#[test]
fn a_tampered_artifact_fails_verification() {
    let root = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(root.path(), "release");
    let dir = release_dir(root.path());
    sign(&key, &dir);
    let chart = dir.join(CHART_TGZ);
    let original = std::fs::read(&chart).unwrap();
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    std::fs::write(&chart, &tampered).unwrap();
    assert_eq!(
        verify(&public, &dir),
        Err("release-sign.sh: SHA256SUMS: a checksum does not match".into())
    );
    // The tamperer also rewrites SHA256SUMS: its signature no longer holds.
    let sums = ok(Command::new("sha256sum")
        .arg("--")
        .args([CHART_TGZ, CRDS])
        .current_dir(&dir));
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    assert_eq!(
        verify(&public, &dir),
        Err("release-sign.sh: SHA256SUMS: bad signature".into())
    );
    // Only the original bytes verify again.
    std::fs::write(&chart, &original).unwrap();
    sign(&key, &dir);
    assert_eq!(verify(&public, &dir), Ok(()));
}

#[test]
fn a_signature_by_another_key_fails_verification() {
    let root = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(root.path(), "release");
    let (other_key, other_public) = key_pair(root.path(), "other");
    let dir = release_dir(root.path());
    sign(&key, &dir);
    assert_eq!(
        verify(&other_public, &dir),
        Err("release-sign.sh: SHA256SUMS: bad signature".into())
    );
    // A chart signed by another key, beside genuine checksums.
    let der = root.path().join("other.der");
    ok(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&other_key)
        .arg("-out")
        .arg(&der)
        .arg(dir.join(CHART_TGZ)));
    let b64 = ok(Command::new("base64").arg("-w0").arg(&der));
    assert!(!b64.is_empty());
    std::fs::write(dir.join(format!("{CHART_TGZ}.sig")), b64).unwrap();
    assert_eq!(
        verify(&public, &dir),
        Err(format!("release-sign.sh: {CHART_TGZ}: bad signature"))
    );
}

#[test]
fn a_file_added_to_a_signed_release_fails_verification() {
    let root = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(root.path(), "release");
    let dir = release_dir(root.path());
    sign(&key, &dir);
    std::fs::write(dir.join("install.sh"), "#!/bin/sh\n").unwrap();
    assert_eq!(
        verify(&public, &dir),
        Err(format!(
            "release-sign.sh: SHA256SUMS does not list exactly the files of {}",
            dir.display()
        ))
    );
}

#[test]
fn signing_takes_only_a_p256_key_and_its_passphrase_from_the_environment() {
    let root = tempfile::tempdir().unwrap();
    let dir = release_dir(root.path());
    let rsa = root.path().join("rsa.pem");
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa));
    let out = sign_script(&[Path::new("sign"), &rsa, &dir]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a PEM ECDSA P-256 private key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(file_names(&dir), [CHART_TGZ, CRDS], "nothing written");

    // An encrypted key: the passphrase from RELEASE_KEY_PASSWORD, never on a command line.
    let passphrase = "test-passphrase-4f1c";
    let encrypted = root.path().join("encrypted.pem");
    let (plain, public) = key_pair(root.path(), "plain");
    ok(Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "env:PASS", "-in"])
        .arg(&plain)
        .arg("-out")
        .arg(&encrypted)
        .env("PASS", passphrase));
    let out = run(Command::new(repo().join("tests/release-sign.sh"))
        .arg("sign")
        .arg(&encrypted)
        .arg(&dir)
        .env("RELEASE_KEY_PASSWORD", passphrase));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(passphrase));
    assert_eq!(verify(&public, &dir), Ok(()));
}

/// cosign reads the same signatures: `cosign verify-blob` accepts each artifact and refuses a
/// tampered one. Needs `COSIGN` (a cosign binary; building one costs about 10 minutes cold, so
/// `make test` does not): `COSIGN=/path/to/cosign cargo test --all-features --test release --
/// --ignored`.
#[test]
#[ignore = "needs COSIGN=<path to a cosign binary>"]
fn cosign_verifies_the_signatures() {
    let cosign = PathBuf::from(std::env::var_os("COSIGN").expect("COSIGN"));
    let root = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(root.path(), "release");
    let dir = release_dir(root.path());
    sign(&key, &dir);
    let cosign_verify = |file: &str| {
        run(Command::new(&cosign)
            .args(["verify-blob", "--insecure-ignore-tlog", "--key"])
            .arg(&public)
            .arg("--signature")
            .arg(dir.join(format!("{file}.sig")))
            .arg(dir.join(file)))
    };
    for file in ["SHA256SUMS", CHART_TGZ, CRDS] {
        let out = cosign_verify(file);
        assert!(
            out.status.success(),
            "cosign verify-blob {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut crds = std::fs::read(dir.join(CRDS)).unwrap();
    crds.push(b'\n');
    std::fs::write(dir.join(CRDS), crds).unwrap();
    assert!(!cosign_verify(CRDS).status.success());
}
