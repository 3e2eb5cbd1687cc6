//! The part of Envoy's ext_authz v3 gRPC API keygate speaks
//! (`envoy.service.auth.v3.Authorization/Check`): the messages, with the
//! field numbers of Envoy's `.proto` files (`envoy/service/auth/v3/
//! external_auth.proto` and `attribute_context.proto`,
//! `envoy/config/core/v3/base.proto`, `envoy/type/v3/http_status.proto`,
//! `google/rpc/status.proto`), and the service on tonic's server and client.
//!
//! Why not the `envoy-types` crate: it compiles the whole Envoy API
//! (8 MB of generated code, the largest unit of every cold build of the
//! workspace, 27 s of CPU on two cores, on the critical path of the
//! harness's first build) for the dozen messages here. Fields keygate
//! does not read are left out: protobuf decoding skips unknown fields, so
//! Envoy's full `CheckRequest` decodes into these. The e2e suite's
//! `envoy-grpc` gateway checks every message against the pinned Envoy.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::NamedService;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext` (only `request`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "4")]
    pub request: Option<attribute_context::Request>,
}

pub mod attribute_context {
    use std::collections::HashMap;

    /// `AttributeContext.Request` (only `http`; `time` is field 1).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, optional, tag = "2")]
        pub http: Option<HttpRequest>,
    }

    /// `AttributeContext.HttpRequest`: what keygate reads of the request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpRequest {
        #[prost(string, tag = "2")]
        pub method: String,
        /// Lowercased names; Envoy joins repeated headers with `,`.
        #[prost(map = "string, string", tag = "3")]
        pub headers: HashMap<String, String>,
        #[prost(string, tag = "4")]
        pub path: String,
        #[prost(string, tag = "5")]
        pub host: String,
        /// Set instead of `headers` when Envoy has `encode_raw_headers`.
        #[prost(message, optional, tag = "13")]
        pub header_map: Option<super::HeaderMap>,
    }
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`: `value` or `raw_value`, not both.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// `envoy.config.core.v3.HeaderValueOption` (without the deprecated
/// `append`, field 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    #[prost(enumeration = "HeaderAppendAction", tag = "3")]
    pub append_action: i32,
    #[prost(bool, tag = "4")]
    pub keep_empty_value: bool,
}

/// `HeaderValueOption.HeaderAppendAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum HeaderAppendAction {
    AppendIfExistsOrAdd = 0,
    AddIfAbsent = 1,
    OverwriteIfExistsOrAdd = 2,
    OverwriteIfExists = 3,
}

/// `envoy.service.auth.v3.CheckResponse` (without `dynamic_metadata`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(oneof = "check_response::HttpResponse", tags = "2, 3")]
    pub http_response: Option<check_response::HttpResponse>,
}

pub mod check_response {
    /// `CheckResponse.http_response` (the error response, 5, is not sent).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum HttpResponse {
        #[prost(message, tag = "2")]
        DeniedResponse(super::DeniedHttpResponse),
        #[prost(message, tag = "3")]
        OkResponse(super::OkHttpResponse),
    }
}

/// `google.rpc.Status` (without `details`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

impl From<&tonic::Status> for RpcStatus {
    fn from(status: &tonic::Status) -> Self {
        Self {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }
    }
}

/// `envoy.service.auth.v3.DeniedHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `envoy.service.auth.v3.OkHttpResponse` (headers to set upstream only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, repeated, tag = "5")]
    pub headers_to_remove: Vec<String>,
}

/// `envoy.type.v3.HttpStatus`; `code` is an HTTP status number (the
/// `StatusCode` enum's values are the status numbers themselves).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// A header to set, replacing whatever the request carried under `key`.
pub fn overwrite(key: &str, value: &str, keep_empty_value: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value,
    }
}

/// The gRPC method's path.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// What answers a Check.
pub trait Authorization: Send + Sync + 'static {
    fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> impl Future<Output = Result<tonic::Response<CheckResponse>, tonic::Status>> + Send;
}

/// The `envoy.service.auth.v3.Authorization` service for tonic's server.
pub struct AuthorizationServer<T> {
    inner: Arc<T>,
}

impl<T> AuthorizationServer<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl<T> Clone for AuthorizationServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> NamedService for AuthorizationServer<T> {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// The one method, as tonic's unary service.
struct Check<T>(Arc<T>);

impl<T: Authorization> tonic::server::UnaryService<CheckRequest> for Check<T> {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.check(request).await })
    }
}

impl<T, B> tonic::codegen::Service<http::Request<B>> for AuthorizationServer<T>
where
    T: Authorization,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            // What gRPC servers answer for a method they do not have.
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
        }
        let method = Check(self.inner.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// A client of the service (keygate's own tests, the bench).
pub struct AuthorizationClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl AuthorizationClient {
    /// Connects to `endpoint` (`http://host:port`).
    pub async fn connect(endpoint: String) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)?
            .connect()
            .await?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    pub async fn check(
        &mut self,
        request: CheckRequest,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|err| tonic::Status::unknown(format!("service was not ready: {err}")))?;
        self.grpc
            .unary(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(CHECK_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await
    }
}
