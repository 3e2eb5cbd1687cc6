//! Envoy ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`).

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::decision::{Presented, Validator};
use crate::ext_authz::check_response::HttpResponse;
use crate::ext_authz::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HttpStatus, OkHttpResponse, RpcStatus, overwrite,
};
use crate::http::{API_KEY_HEADER, GROUP_HEADER, OWNER_HEADER, REASON_HEADER};
use crate::outcome::{Outcome, Reason};
use crate::protocol::Protocol;

pub struct ExtAuthz {
    validator: Arc<Validator>,
}

impl ExtAuthz {
    pub fn server(validator: Arc<Validator>) -> AuthorizationServer<Self> {
        AuthorizationServer::new(Self { validator })
    }
}

impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            // No HTTP attributes: not a request keygate can route.
            return Ok(Response::new(response(&Outcome::Deny(Reason::NoRoute))));
        };
        let presented = api_key(http);
        let outcome = self
            .validator
            .decide(Protocol::Grpc, &http.path, presented)
            .await;
        let extra = match outcome {
            Outcome::Allow { .. } => self.validator.upstream_headers().await,
            Outcome::Deny(_) => Vec::new(),
        };
        Ok(Response::new(response_with(&outcome, &extra)))
    }
}

type HttpRequest = crate::ext_authz::attribute_context::HttpRequest;

/// The key from `headers` (Envoy lowercases names and joins repeated
/// headers with `,`, which then fails to parse) or, when Envoy is set to
/// `encode_raw_headers`, from `header_map`, where repeats stay separate.
fn api_key(http: &HttpRequest) -> Presented<'_> {
    let from_map: Vec<&str> = http
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(API_KEY_HEADER))
        .map(|(_, value)| value.as_str())
        .collect();
    let from_raw: Vec<&str> = http
        .header_map
        .iter()
        .flat_map(|map| &map.headers)
        .filter(|h| h.key.eq_ignore_ascii_case(API_KEY_HEADER))
        .map(|h| {
            if h.value.is_empty() {
                std::str::from_utf8(&h.raw_value).unwrap_or("\u{fffd}")
            } else {
                &h.value
            }
        })
        .collect();
    let values = if from_map.is_empty() {
        from_raw
    } else {
        from_map
    };
    match values.as_slice() {
        [] => Presented::Missing,
        [one] => Presented::One(one),
        _ => Presented::Many,
    }
}

fn response(outcome: &Outcome) -> CheckResponse {
    response_with(outcome, &[])
}

/// `extra`: the configured upstream headers (only added on Allow).
fn response_with(outcome: &Outcome, extra: &[(String, String)]) -> CheckResponse {
    match outcome {
        Outcome::Allow { owner, group, .. } => {
            // Overwrite, so a client cannot smuggle its own value upstream;
            // keep empty values for the same reason (an empty owner must
            // still replace whatever the client sent).
            let mut headers = vec![
                overwrite(OWNER_HEADER, owner, true),
                overwrite(GROUP_HEADER, group, true),
            ];
            headers.extend(
                extra
                    .iter()
                    .map(|(name, value)| overwrite(name, value, true)),
            );
            CheckResponse {
                status: Some(RpcStatus::from(&Status::ok(""))),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove: Vec::new(),
                })),
            }
        }
        Outcome::Deny(reason) => {
            let code = match reason.http_status() {
                403 => Code::PermissionDenied,
                503 => Code::Unavailable,
                _ => Code::Unauthenticated,
            };
            CheckResponse {
                status: Some(RpcStatus::from(&Status::new(code, reason.code()))),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(reason.http_status()),
                    }),
                    headers: vec![
                        overwrite(REASON_HEADER, reason.code(), false),
                        overwrite("content-type", "application/json", false),
                    ],
                    body: reason.json_body(),
                })),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ext_authz::{HeaderAppendAction, HeaderMap, HeaderValue};

    use super::*;

    fn request(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            path: "/billing/invoices".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_key_header_case_insensitively() {
        assert_eq!(
            api_key(&request(&[("x-api-key", "k")])),
            Presented::One("k")
        );
        assert_eq!(
            api_key(&request(&[("X-Api-Key", "k")])),
            Presented::One("k")
        );
        assert_eq!(
            api_key(&request(&[("authorization", "k")])),
            Presented::Missing
        );
        let mut raw = request(&[]);
        raw.header_map = Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "x-api-key".into(),
                    value: String::new(),
                    raw_value: b"a".to_vec(),
                },
                HeaderValue {
                    key: "x-api-key".into(),
                    value: String::new(),
                    raw_value: b"b".to_vec(),
                },
            ],
        });
        assert_eq!(api_key(&raw), Presented::Many);
    }

    #[test]
    fn allow_sets_status_ok_and_overwrites_identity_headers() {
        let response = response(&Outcome::Allow {
            owner: "u1".into(),
            group: "g".into(),
            expires: None,
        });
        assert_eq!(response.status.unwrap().code, Code::Ok as i32);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("not an OK response")
        };
        let headers: Vec<(String, String, i32)> = ok
            .headers
            .iter()
            .map(|h| {
                let header = h.header.as_ref().unwrap();
                (header.key.clone(), header.value.clone(), h.append_action)
            })
            .collect();
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        assert_eq!(
            headers,
            [
                ("x-keyrig-owner".into(), "u1".into(), overwrite),
                ("x-keyrig-group".into(), "g".into(), overwrite)
            ]
        );
    }

    #[test]
    fn deny_carries_status_reason_header_and_body() {
        for (reason, code, http) in [
            (Reason::Unknown, Code::Unauthenticated, 401),
            (Reason::WrongGroup, Code::PermissionDenied, 403),
            (Reason::NoRoute, Code::PermissionDenied, 403),
            (Reason::VaultUnavailable, Code::Unavailable, 503),
        ] {
            let response = response(&Outcome::Deny(reason));
            assert_eq!(response.status.unwrap().code, code as i32);
            let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
                panic!("not denied")
            };
            assert_eq!(denied.status.unwrap().code, http);
            assert_eq!(denied.body, reason.json_body());
            let header = denied.headers[0].header.as_ref().unwrap();
            assert_eq!(
                (header.key.as_str(), header.value.as_str()),
                ("x-keyrig-reason", reason.code())
            );
        }
    }
}
