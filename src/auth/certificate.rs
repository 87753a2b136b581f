//! Authentication stage, second factor: the identity that a verified client certificate
//! names, and the rule that binds it to an account (seed 003: access is authenticated by
//! a client certificate *and* ID/password).
//!
//! Guarantees: only certificates that rustls has already verified against the operator's
//! client CA reach this module (the TLS layer in `http::tls` builds [`ClientIdentity`]
//! after the handshake); the identity is the subject's one CommonName — a certificate
//! with none, with several, or with a CN that is not plain text names nobody and so
//! matches no account; the comparison with the username is exact, like usernames
//! themselves. With binding on, a request without a verified certificate is refused too:
//! binding never silently degrades to password-only.

use ring::digest;

/// The identity a verified client certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's CommonName, when there is exactly one and it is text.
    pub common_name: Option<String>,
    /// SHA-256 of the certificate (DER), hex: lets an auditor tell certificates apart.
    pub fingerprint: String,
}

impl ClientIdentity {
    /// Read the identity from a certificate in DER form.
    pub fn from_der(der: &[u8]) -> Self {
        Self {
            common_name: subject_common_name(der),
            fingerprint: hex::encode(digest::digest(&digest::SHA256, der).as_ref()),
        }
    }
}

/// Why a request fails the certificate binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingRefusal {
    /// No verified client certificate came with the connection.
    NoCertificate,
    /// The certificate names someone else (or nobody).
    Mismatch { presented: Option<String> },
}

/// Binding rule: the verified certificate's CN must equal `username`.
pub fn check_binding(
    identity: Option<&ClientIdentity>,
    username: &str,
) -> Result<(), BindingRefusal> {
    let Some(id) = identity else {
        return Err(BindingRefusal::NoCertificate);
    };
    match &id.common_name {
        Some(cn) if cn == username => Ok(()),
        other => Err(BindingRefusal::Mismatch {
            presented: other.clone(),
        }),
    }
}

/// One DER element: (tag, contents, rest of the input).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        // DER never needs more than 4 length bytes for a certificate; 0x80 (indefinite) is BER.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject's CommonName if there is exactly one and it is a UTF8String,
/// PrintableString or IA5String.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] EXPLICIT version is optional (absent means v1).
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = tlv(rest)? else {
        return None;
    };
    let mut found: Vec<String> = Vec::new();
    while !rdns.is_empty() {
        let (SET, mut set, next) = tlv(rdns)? else {
            return None;
        };
        rdns = next;
        while !set.is_empty() {
            let (SEQUENCE, atv, next) = tlv(set)? else {
                return None;
            };
            set = next;
            let (OID, oid, value) = tlv(atv)? else {
                return None;
            };
            if oid != CN_OID {
                continue;
            }
            let (vtag, v, _) = tlv(value)?;
            let text = match vtag {
                0x0c => std::str::from_utf8(v).ok()?.to_string(),
                0x13 | 0x16 if v.is_ascii() => String::from_utf8(v.to_vec()).ok()?,
                // Teletex, BMP, universal strings: not plain text we can compare safely.
                _ => return None,
            };
            found.push(text);
        }
    }
    (found.len() == 1).then(|| found.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert_with(dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_subject_cn_not_the_issuer_or_other_attributes() {
        let der = cert_with(&[
            (DnType::OrganizationName, "Ministry"),
            (DnType::CommonName, "researcher1"),
            (DnType::CountryName, "JP"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("researcher1"));
        let id = ClientIdentity::from_der(&der);
        assert_eq!(id.fingerprint.len(), 64);
        assert_eq!(check_binding(Some(&id), "researcher1"), Ok(()));
    }

    #[test]
    fn non_ascii_cn_is_read_as_utf8() {
        let der = cert_with(&[(DnType::CommonName, "研究者１")]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("研究者１"));
    }

    #[test]
    fn no_cn_names_nobody_and_matches_no_account() {
        let der = cert_with(&[(DnType::OrganizationName, "researcher1")]);
        assert_eq!(subject_common_name(&der), None);
        let id = ClientIdentity::from_der(&der);
        assert_eq!(
            check_binding(Some(&id), "researcher1"),
            Err(BindingRefusal::Mismatch { presented: None })
        );
    }

    #[test]
    fn binding_is_exact_and_needs_a_certificate() {
        let id = ClientIdentity::from_der(&cert_with(&[(DnType::CommonName, "researcher2")]));
        assert_eq!(
            check_binding(Some(&id), "researcher1"),
            Err(BindingRefusal::Mismatch {
                presented: Some("researcher2".into())
            })
        );
        // Prefixes, case and padding never match.
        let id = ClientIdentity::from_der(&cert_with(&[(DnType::CommonName, "Researcher1")]));
        assert!(check_binding(Some(&id), "researcher1").is_err());
        let id = ClientIdentity::from_der(&cert_with(&[(DnType::CommonName, "researcher1 ")]));
        assert!(check_binding(Some(&id), "researcher1").is_err());
        assert_eq!(
            check_binding(None, "researcher1"),
            Err(BindingRefusal::NoCertificate)
        );
    }

    #[test]
    fn garbage_and_truncated_input_name_nobody() {
        let der = cert_with(&[(DnType::CommonName, "researcher1")]);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            // Truncation makes the outer length overrun: nothing is read.
            assert_eq!(subject_common_name(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_common_name(&[0x30, 0x80, 0, 0]), None);
    }
}
