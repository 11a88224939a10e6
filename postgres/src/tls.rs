//! TLS to the server: libpq's `sslmode=verify-full` with `sslrootcert`.
//!
//! The connection string may say `sslmode=verify-full sslrootcert=PATH`
//! (or `?sslmode=verify-full&sslrootcert=PATH` in a URL). Both connections
//! then use TLS, on rustls: the server's certificate must chain to a CA in
//! the PEM file `PATH` and name the host the string connects to. Modes that
//! encrypt without verifying (`require`, `verify-ca`) are refused: they do
//! not protect against a man in the middle, and a connector that moves a
//! database's every change should not offer that silently. `disable` and
//! `prefer` connect without TLS (`prefer` as if the server had none).
//!
//! Without the `tls` feature, `verify-full` is refused with a message
//! naming the feature.

use std::path::PathBuf;

use tideline_engine::{Error, Result};

/// The TLS options taken out of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// The CA certificates to verify the server against (`verify-full`);
    /// `None`: no TLS.
    pub(crate) root_certificates: Option<PathBuf>,
}

/// Splits `text` into the string tokio-postgres parses (without `sslmode`
/// and `sslrootcert`, which it handles differently or not at all) and the
/// TLS options; `field` names the setting in errors.
pub(crate) fn split_tls_options(text: &str, field: &str) -> Result<(String, TlsOptions)> {
    let url = text.starts_with("postgresql://") || text.starts_with("postgres://");
    let (mut mode, mut root) = (None, None);
    let rest = if url {
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| match pair.split_once('=') {
                Some(("sslmode", value)) => {
                    mode = Some(value.to_string());
                    false
                }
                Some(("sslrootcert", value)) => {
                    root = Some(value.to_string());
                    false
                }
                _ => true,
            })
            .collect();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for token in key_value_tokens(text) {
            match token.split_once('=') {
                Some((key, value)) if key.trim() == "sslmode" => mode = Some(unquote(value)),
                Some((key, value)) if key.trim() == "sslrootcert" => root = Some(unquote(value)),
                _ => kept.push(token),
            }
        }
        kept.join(" ")
    };
    let options = match mode.as_deref() {
        None | Some("disable" | "prefer") => TlsOptions::default(),
        Some("verify-full") => {
            let root = root.ok_or_else(|| {
                Error::config(
                    field,
                    "sslmode=verify-full needs sslrootcert=PATH, the CA certificates (PEM) to \
                     verify the server against",
                )
            })?;
            if !cfg!(feature = "tls") {
                return Err(Error::config(
                    field,
                    "sslmode=verify-full: this build has no TLS (enable the `postgres-tls` \
                     feature of tideline, or `tls` of tideline-postgres)",
                ));
            }
            TlsOptions {
                root_certificates: Some(PathBuf::from(root)),
            }
        }
        Some(other @ ("require" | "verify-ca")) => {
            return Err(Error::config(
                field,
                format!(
                    "sslmode={other} encrypts without verifying the server's name: use \
                     sslmode=verify-full with sslrootcert=PATH"
                ),
            ))
        }
        Some(other) => {
            return Err(Error::config(
                field,
                format!("sslmode={other:?} is not a TLS mode (disable, prefer, verify-full)"),
            ))
        }
    };
    Ok((rest, options))
}

/// The `key=value` tokens of a libpq string: separated by spaces outside
/// single quotes.
fn key_value_tokens(text: &str) -> Vec<String> {
    let (mut tokens, mut current, mut quoted, mut escaped) =
        (Vec::new(), String::new(), false, false);
    for c in text.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' => {
                current.push(c);
                escaped = true;
            }
            '\'' => {
                current.push(c);
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value)
        .replace("\\'", "'")
}

/// A rustls client configuration trusting the CA certificates in `path`.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
#[cfg(feature = "tls")]
pub(crate) fn client_config(path: &std::path::Path, field: &str) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::config(
                field,
                format!("cannot read the CA certificates in {}: {e}", path.display()),
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(Error::config(
            field,
            format!("{} holds no CA certificate", path.display()),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("rustls has no protocol version: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
// Tests fail by panicking, on the value that was wrong.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_both_forms() {
        let verified = split_tls_options(
            "host=db user=u sslmode=verify-full sslrootcert='/etc/ssl/my ca.pem' dbname=x",
            "c",
        );
        #[cfg(feature = "tls")]
        {
            let (rest, options) = verified.unwrap();
            assert_eq!(rest, "host=db user=u dbname=x");
            assert_eq!(
                options.root_certificates,
                Some(PathBuf::from("/etc/ssl/my ca.pem"))
            );
        }
        #[cfg(not(feature = "tls"))]
        assert!(verified.unwrap_err().to_string().contains("postgres-tls"));

        let (rest, options) = split_tls_options(
            "postgresql://u@db/x?sslmode=disable&application_name=a",
            "c",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u@db/x?application_name=a");
        assert_eq!(options, TlsOptions::default());
    }

    #[test]
    fn modes_that_do_not_verify_are_refused() {
        for mode in ["require", "verify-ca", "bogus"] {
            let err = split_tls_options(&format!("host=db sslmode={mode}"), "source.connection")
                .unwrap_err();
            assert!(err.to_string().contains("source.connection"), "{err}");
        }
        let err = split_tls_options("host=db sslmode=verify-full", "c").unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
    }
}
