//! Asking keygate: the forward-auth request the module sends through
//! Envoy's HTTP callout, and what keygate's answer means.
//!
//! The request is keygate's HTTP contract (`keygate::http`): `GET /auth`
//! with the key in `x-api-key` and the path the client asked Envoy for in
//! `x-forwarded-uri` (keygate routes it to an API group itself). keygate
//! answers 200 with `x-keyrig-owner`, `x-keyrig-group` (and
//! `x-keyrig-expires` for a record that expires), or a denial: 401, 403 or
//! 503 with `x-keyrig-reason`.

/// The callout's headers for one request (owned; borrowed into the ABI's
/// header array for the call).
pub fn request_headers(
    authority: &str,
    key: &str,
    path: &[u8],
    method: &[u8],
) -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b":method", b"GET".to_vec()),
        (b":path", b"/auth".to_vec()),
        (b"host", authority.as_bytes().to_vec()),
        (b"x-api-key", key.as_bytes().to_vec()),
        (b"x-forwarded-uri", path.to_vec()),
        // For keygate's logs; its decision does not depend on the method.
        (b"x-forwarded-method", method.to_vec()),
    ]
}

/// What keygate answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the key is valid for `group` (keygate's routing of the path).
    Allow {
        owner: String,
        group: String,
        /// The record's `expires`, Unix seconds.
        expires: Option<i64>,
    },
    /// keygate's denial, passed on as it is.
    Deny { status: u16, reason: String },
    /// No usable answer: the callout failed (reset, timeout, no healthy
    /// host), or what came back is not keygate's contract.
    Unreachable(String),
}

impl Answer {
    /// Whether keygate could not tell (rather than said no): the cases in
    /// which an approved entry may be resurrected. A 503 `vault-forbidden`
    /// is Vault's answer about keygate's policy, never resurrected (as in
    /// keygate).
    pub fn is_outage(&self) -> bool {
        match self {
            Answer::Unreachable(_) => true,
            Answer::Deny { status, reason } => {
                *status == 503 && matches!(reason.as_str(), "vault-unavailable" | "vault-busy")
            }
            Answer::Allow { .. } => false,
        }
    }
}

/// keygate's answer from the callout's response headers (`None` when the
/// callout did not complete).
pub fn interpret(headers: Option<&[(&[u8], &[u8])]>) -> Answer {
    let Some(headers) = headers else {
        return Answer::Unreachable("the callout to keygate failed (reset or timed out)".into());
    };
    let one = |name: &str| -> Result<Option<&str>, String> {
        let mut values = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v);
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(value), None) => std::str::from_utf8(value)
                .map(Some)
                .map_err(|_| format!("keygate's {name} is not UTF-8")),
            (Some(_), Some(_)) => Err(format!("keygate sent {name} twice")),
        }
    };
    let answer = || -> Result<Answer, String> {
        let status: u16 = one(":status")?
            .and_then(|s| s.parse().ok())
            .ok_or("keygate's answer has no :status")?;
        if status == 200 {
            let owner = one("x-keyrig-owner")?.ok_or("keygate's 200 has no x-keyrig-owner")?;
            let group = one("x-keyrig-group")?.ok_or("keygate's 200 has no x-keyrig-group")?;
            let expires = match one("x-keyrig-expires")? {
                None => None,
                Some(text) => Some(
                    text.parse::<i64>()
                        .map_err(|_| "keygate's x-keyrig-expires is not Unix seconds")?,
                ),
            };
            return Ok(Answer::Allow {
                owner: owner.to_owned(),
                group: group.to_owned(),
                expires,
            });
        }
        let reason = one("x-keyrig-reason")?;
        match reason {
            Some(reason) if matches!(status, 401 | 403 | 503) && is_reason_code(reason) => {
                Ok(Answer::Deny {
                    status,
                    reason: reason.to_owned(),
                })
            }
            // Envoy's own 503 (no healthy upstream, connection refused),
            // its router's 504 for a callout past `callout_timeout_ms`
            // (a timeout arrives as a success, not a reset), or something
            // that is not keygate.
            _ => Err(format!(
                "keygate's cluster answered {status} without a keygate reason"
            )),
        }
    };
    answer().unwrap_or_else(Answer::Unreachable)
}

/// keygate's reason codes are short lowercase words joined by `-`; anything
/// else is not passed on to clients.
pub fn is_reason_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: &[(&str, &str)]) -> Answer {
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        interpret(Some(&headers))
    }

    #[test]
    fn keygate_answers_map_to_allow_or_deny() {
        assert_eq!(
            answer(&[
                (":status", "200"),
                ("x-keyrig-owner", "user-1"),
                ("x-keyrig-group", "billing-api"),
                ("content-length", "0"),
            ]),
            Answer::Allow {
                owner: "user-1".into(),
                group: "billing-api".into(),
                expires: None
            }
        );
        assert_eq!(
            answer(&[
                (":status", "200"),
                ("X-Keyrig-Owner", ""),
                ("x-keyrig-group", "g"),
                ("x-keyrig-expires", "1900000000"),
            ]),
            Answer::Allow {
                owner: "".into(),
                group: "g".into(),
                expires: Some(1_900_000_000)
            }
        );
        assert_eq!(
            answer(&[(":status", "401"), ("x-keyrig-reason", "unknown")]),
            Answer::Deny {
                status: 401,
                reason: "unknown".into()
            }
        );
        let busy = answer(&[(":status", "503"), ("x-keyrig-reason", "vault-busy")]);
        assert!(busy.is_outage());
        let forbidden = answer(&[(":status", "503"), ("x-keyrig-reason", "vault-forbidden")]);
        assert!(!forbidden.is_outage());
    }

    #[test]
    fn anything_else_is_unreachable() {
        for headers in [
            &[(":status", "503")][..],
            &[(":status", "200"), ("x-keyrig-owner", "u")],
            &[(":status", "200"), ("x-keyrig-group", "g")],
            &[
                (":status", "200"),
                ("x-keyrig-owner", "u"),
                ("x-keyrig-owner", "v"),
                ("x-keyrig-group", "g"),
            ],
            &[(":status", "404"), ("x-keyrig-reason", "unknown")],
            &[(":status", "401"), ("x-keyrig-reason", "Unknown <b>")],
            &[("x-keyrig-reason", "unknown")],
        ] {
            let got = answer(headers);
            assert!(
                matches!(got, Answer::Unreachable(_)) && got.is_outage(),
                "{headers:?}: {got:?}"
            );
        }
        assert!(interpret(None).is_outage());
    }

    #[test]
    fn the_request_is_keygates_forward_auth_contract() {
        let headers = request_headers(
            "keygate",
            &"a".repeat(64),
            b"/billing/invoices?x=1",
            b"POST",
        );
        let names: Vec<&[u8]> = headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                &b":method"[..],
                b":path",
                b"host",
                b"x-api-key",
                b"x-forwarded-uri",
                b"x-forwarded-method"
            ]
        );
        assert_eq!(headers[1].1, b"/auth");
        assert_eq!(headers[4].1, b"/billing/invoices?x=1");
    }
}
