//! The identity of a verified peer certificate.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::peer::PeerIdentity;

/// Reads subject, DNS and URI names off a certificate rustls already
/// verified; `None` if it cannot be parsed (it then could not have been
/// verified either).
pub(crate) fn of_certificate(der: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject().to_string();
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push((*n).to_owned()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    Some(PeerIdentity::new(subject, dns, uris))
}
