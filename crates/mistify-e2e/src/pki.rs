//! Throw-away certificates for TLS tests, made with the `openssl` command (installed by
//! `make test`): a CA, a server certificate for `127.0.0.1`/`localhost` and a client
//! certificate signed by it, and a second, unrelated CA with its own client certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files under one directory (every key unencrypted).
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing of the above.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl (make test installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn ca(dir: &Path, name: &str) {
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC);
    let subject = format!("/CN={name}");
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    args.extend([
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &key,
        "-out",
        &cert,
    ]);
    openssl(dir, &args);
}

fn leaf(dir: &Path, ca: &str, name: &str, extensions: &str) {
    let (key, csr, cert, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={name}");
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(EC);
    args.extend(["-subj", &subject, "-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    std::fs::write(dir.join(&ext), extensions).expect("extensions file");
    let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "0x1234",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
}

/// Makes the files in `dir`.
pub fn make(dir: &Path) -> Pki {
    ca(dir, "ca");
    ca(dir, "other-ca");
    leaf(
        dir,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n",
    );
    let client = "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n";
    leaf(dir, "ca", "client", client);
    leaf(dir, "other-ca", "other-client", client);
    let p = |f: &str| dir.join(f);
    Pki {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        other_ca: p("other-ca.pem"),
        other_client_cert: p("other-client.pem"),
        other_client_key: p("other-client.key"),
    }
}
