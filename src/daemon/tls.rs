//! Why a TLS handshake failed, said so that the reader knows what to check: the daemon's TLS peers are the MQTT
//! broker and HTTPS cameras, each verified against a CA file the configuration names or the system's roots.
//! rustls's errors arrive wrapped (in `io::Error`s, in the clients' own errors); `rustls_cause` digs them out.

use std::error::Error as StdError;
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error};

/// Who the daemon was talking to, and with which files.
pub struct Peer<'a> {
    /// `the MQTT broker`, `the camera`.
    pub what: &'a str,
    /// The host name or address the certificate must be valid for, and the key that sets it.
    pub host: &'a str,
    pub host_key: &'a str,
    /// What the peer's certificate was checked against: `mqtt.tls.ca_file /etc/capdec/ca.pem`.
    pub roots: &'a str,
    /// `mqtt.tls.client_cert /etc/capdec/client.pem`, when the daemon presents one.
    pub client_cert: Option<&'a str>,
    /// What to do when the peer wants a client certificate and got none.
    pub client_hint: &'a str,
}

/// The rustls error somewhere in `error`'s chain, if there is one.
pub fn rustls_cause<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<Error>() {
            return Some(found);
        }
        // An io::Error's `source` skips the error it wraps.
        if let Some(found) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Error>())
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

pub fn explain(error: &Error, peer: &Peer) -> String {
    let what = peer.what;
    let checked = format!("(checked against {})", peer.roots);
    match error {
        Error::InvalidCertificate(certificate) => {
            let problem = match certificate {
                CertificateError::UnknownIssuer => format!(
                    "is not signed by any CA in {}: the wrong CA file, or a certificate signed by another CA",
                    peer.roots
                ),
                CertificateError::Expired => format!("has expired {checked}"),
                CertificateError::ExpiredContext { time, not_after } => format!(
                    "expired at {} (this machine's time is {}) {checked}",
                    moment(not_after),
                    moment(time)
                ),
                CertificateError::NotValidYet => {
                    format!("is not valid yet: is this machine's clock right? {checked}")
                }
                CertificateError::NotValidYetContext { time, not_before } => format!(
                    "is valid only from {} and this machine's time is {}: is its clock right? {checked}",
                    moment(not_before),
                    moment(time)
                ),
                CertificateError::NotValidForName => format!(
                    "is not valid for the host name `{}` ({}) {checked}",
                    peer.host, peer.host_key
                ),
                CertificateError::NotValidForNameContext { presented, .. } => format!(
                    "is not valid for the host name `{}` ({}): it is for {} {checked}",
                    peer.host,
                    peer.host_key,
                    presented
                        .iter()
                        .map(|name| name_only(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!("was refused: {other:?} {checked}"),
            };
            format!("TLS: {what}'s certificate {problem}")
        }
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            format!(
                "TLS: {what} requires a client certificate: {}",
                peer.client_hint
            )
        }
        Error::AlertReceived(alert) => match (alert, peer.client_cert) {
            (AlertDescription::CertificateExpired, Some(cert)) => {
                format!("TLS: {what} refused the client certificate {cert}: it has expired")
            }
            (
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::DecryptError
                | AlertDescription::AccessDenied,
                Some(cert),
            ) => format!(
                "TLS: {what} refused the client certificate {cert} ({alert:?}): is it signed by a CA {what} \
                 trusts for clients, and is the key its own?"
            ),
            _ => format!("TLS: {what} ended the handshake ({alert:?})"),
        },
        other => format!("TLS with {what} failed: {other}"),
    }
}

/// rustls shows a certificate's names as `DnsName("camera.lan")`.
fn name_only(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .unwrap_or(presented)
}

fn moment(time: &UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(time.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer<'static> {
        Peer {
            what: "the MQTT broker",
            host: "broker.lan",
            host_key: "mqtt.host",
            roots: "mqtt.tls.ca_file /etc/capdec/ca.pem",
            client_cert: Some("mqtt.tls.client_cert /etc/capdec/client.pem"),
            client_hint: "set mqtt.tls.client_cert and mqtt.tls.client_key",
        }
    }

    #[test]
    fn the_cause_is_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let wrapped = anyhow::Error::new(io).context("connecting");
        let found = rustls_cause(wrapped.as_ref()).expect("found");
        assert!(
            explain(found, &peer())
                .contains("is not signed by any CA in mqtt.tls.ca_file /etc/capdec/ca.pem")
        );
    }

    #[test]
    fn each_reason_names_the_file_it_concerns() {
        let expired = Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        });
        assert_eq!(
            explain(&expired, &peer()),
            "TLS: the MQTT broker's certificate expired at 2023-11-14T22:13:20Z (this machine's time is \
             2027-01-15T08:00:00Z) (checked against mqtt.tls.ca_file /etc/capdec/ca.pem)"
        );
        let name = explain(
            &Error::InvalidCertificate(CertificateError::NotValidForName),
            &peer(),
        );
        assert!(
            name.contains("not valid for the host name `broker.lan` (mqtt.host)"),
            "{name}"
        );
        let client = explain(
            &Error::AlertReceived(AlertDescription::CertificateExpired),
            &peer(),
        );
        assert!(
            client.contains("refused the client certificate mqtt.tls.client_cert /etc/capdec/client.pem: it has expired"),
            "{client}"
        );
    }
}
