//! A minimal gRPC client for the signer's `Sign`: unary calls over HTTP/2
//! on mutual TLS, with request bodies framed before the timed run.
//!
//! It exists for the same reason as [`crate::http`] for cfssl: the load
//! generator shares the cores with the server it measures, so every
//! microsecond it spends is one the server does not get. tonic's `Channel`
//! puts each call through a tower buffer task and encodes the message in
//! the timed loop; this sends pre-made gRPC frames on `h2` directly (the
//! same HTTP/2 implementation tonic uses), many streams per connection.
//!
//! It must never count a call as a success without a `200` response, a
//! complete length-prefixed message, `grpc-status: 0` (in the trailers, or
//! in the head of a trailers-only answer) and a `SignResponse` that
//! decodes with a certificate in it and is not a replay (for a batch: every
//! one of its results so).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use certsign_proto::v1::{SignRequest, SignResponse};
use prost::Message;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The signer's one RPC.
pub const SIGN_PATH: &str = "/certsign.v1.Signer/Sign";

/// Header values every call sends, made once rather than parsed per call.
const GRPC: http::HeaderValue = http::HeaderValue::from_static("application/grpc");
const TRAILERS: http::HeaderValue = http::HeaderValue::from_static("trailers");

/// A unary call's request body: `message` behind gRPC's 5-byte prefix
/// (uncompressed, big-endian length).
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    // A message over 4 GiB cannot be framed; none of ours comes near.
    b.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode(&mut b).unwrap_or_default();
    b.freeze()
}

/// Pre-framed `Sign` request bodies.
pub fn frame_all(requests: &[SignRequest]) -> Vec<Bytes> {
    requests.iter().map(frame).collect()
}

/// One HTTP/2 connection to the signer; clones share it.
#[derive(Clone)]
pub struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// `https://<addr>/certsign.v1.Signer/Sign`, parsed once (a clone
    /// shares its bytes).
    uri: http::Uri,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("uri", &self.uri).finish()
    }
}

impl Conn {
    /// Connects to `addr` (127.0.0.1:port) over mutual TLS, trusting
    /// `ca_pem` and presenting `cert_pem`/`key_pem`; the TLS and HTTP/2
    /// handshakes complete here, before any timed call.
    pub async fn connect(
        addr: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<Self> {
        let mut config = crate::http::client_config(ca_pem, cert_pem, key_pem)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(host.to_string())?, tcp)
            .await?;
        let (send, connection) = h2::client::handshake(tls).await?;
        tokio::spawn(async move {
            // Ends when the connection closes; a call on it then fails
            // with the reason, so nothing is lost by dropping this one.
            let _ = connection.await;
        });
        Ok(Conn {
            send: send.ready().await?,
            uri: format!("https://{addr}{SIGN_PATH}").parse()?,
        })
    }

    /// One `Sign` with a pre-framed body: how many fresh certificates it
    /// brought (1, or a batch's size); `Ok` only when every one is fresh.
    pub async fn sign(&self, body: Bytes) -> Result<usize, String> {
        let e = |e: h2::Error| e.to_string();
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, GRPC)
            .header(http::header::TE, TRAILERS)
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(e)?;
        let (response, mut stream) = send.send_request(request, false).map_err(e)?;
        stream.send_data(body, true).map_err(e)?;
        let response = response.await.map_err(e)?;
        let (head, mut body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(format!("HTTP status {}", head.status));
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(e)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        // A trailers-only answer (an error) carries grpc-status in the
        // head; a normal one in the trailers.
        let trailers = body.trailers().await.map_err(e)?;
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"));
        if status.map(http::HeaderValue::as_bytes) != Some(b"0") {
            let message = trailers
                .as_ref()
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| head.headers.get("grpc-message"))
                .map(|v| percent_decode(v.as_bytes()))
                .unwrap_or_default();
            return Err(format!(
                "grpc-status {}: {message}",
                status.and_then(|v| v.to_str().ok()).unwrap_or("missing")
            ));
        }
        let message = unframe(&data)?;
        let answer = SignResponse::decode(message).map_err(|e| e.to_string())?;
        if !answer.results.is_empty() {
            // A batch: every request must have its own fresh certificate.
            for r in &answer.results {
                if r.code != 0 {
                    return Err(format!("batch item: code {}: {}", r.code, r.message));
                }
                if r.certificate.is_empty() || r.replayed {
                    return Err("batch item: empty or replayed answer".into());
                }
            }
            return Ok(answer.results.len());
        }
        if answer.certificate.is_empty() || answer.replayed {
            return Err("empty or replayed answer".into());
        }
        Ok(1)
    }
}

/// `grpc-message` as sent: percent-encoded UTF-8 (gRPC over HTTP/2).
fn percent_decode(v: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match (
            v[i],
            v.get(i + 1).and_then(|&b| hex(b)),
            v.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one message of a unary response body.
fn unframe(data: &[u8]) -> Result<&[u8], String> {
    let (head, rest) = data
        .split_at_checked(5)
        .ok_or("response body shorter than a gRPC frame header")?;
    if head[0] != 0 {
        return Err("compressed response (none was asked for)".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != len {
        return Err(format!(
            "response frame says {len} bytes, body has {}",
            rest.len()
        ));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use certsign_proto::v1::signer_server::{Signer, SignerServer};
    use certsign_proto::v1::{CertificateSigningRequest, ObjectMeta, SignResult};
    use certsign_tests::grpc::{MintSpec, mint_with, rogue_ca};
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

    /// A tonic `Signer` that answers by the request's name: "ok" gets a
    /// certificate, "replay" a replayed one, "empty" none, anything else
    /// FAILED_PRECONDITION.
    struct Judge;

    #[tonic::async_trait]
    impl Signer for Judge {
        async fn sign(
            &self,
            request: tonic::Request<SignRequest>,
        ) -> Result<tonic::Response<SignResponse>, tonic::Status> {
            let request = request.into_inner();
            if let Some(certsign_proto::v1::sign_request::Request::Batch(b)) = request.request {
                // A batch: each item answered as it would be alone.
                let mut results = Vec::new();
                for item in b.requests {
                    let one = self.sign(tonic::Request::new(item)).await;
                    results.push(match one {
                        Ok(r) => {
                            let r = r.into_inner();
                            SignResult {
                                certificate: r.certificate,
                                replayed: r.replayed,
                                ..SignResult::default()
                            }
                        }
                        Err(s) => SignResult {
                            code: s.code() as i32,
                            message: s.message().into(),
                            ..SignResult::default()
                        },
                    });
                }
                return Ok(tonic::Response::new(SignResponse {
                    results,
                    ..SignResponse::default()
                }));
            }
            let name = match request.request {
                Some(certsign_proto::v1::sign_request::Request::CertificateSigningRequest(c)) => {
                    c.metadata
                }
                _ => None,
            }
            .map(|m| m.name)
            .unwrap_or_default();
            let cert = b"-----BEGIN CERTIFICATE-----\n".to_vec();
            match name.as_str() {
                "ok" => Ok(tonic::Response::new(SignResponse {
                    certificate: cert,
                    serial_number: "01".into(),
                    replayed: false,
                    ..SignResponse::default()
                })),
                "replay" => Ok(tonic::Response::new(SignResponse {
                    certificate: cert,
                    serial_number: "01".into(),
                    replayed: true,
                    ..SignResponse::default()
                })),
                "empty" => Ok(tonic::Response::new(SignResponse::default())),
                other => Err(tonic::Status::failed_precondition(format!(
                    "approval: no approval for {other}"
                ))),
            }
        }
    }

    fn named(name: &str) -> Bytes {
        frame(&named_request(name))
    }

    fn batch_of(names: &[&str]) -> Bytes {
        frame(&SignRequest {
            request: Some(certsign_proto::v1::sign_request::Request::Batch(
                certsign_proto::v1::SignBatch {
                    requests: names.iter().map(|n| named_request(n)).collect(),
                },
            )),
            ..Default::default()
        })
    }

    fn named_request(name: &str) -> SignRequest {
        SignRequest {
            request: Some(
                certsign_proto::v1::sign_request::Request::CertificateSigningRequest(
                    CertificateSigningRequest {
                        metadata: Some(ObjectMeta {
                            name: name.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn signs_over_mutual_tls_and_counts_only_fresh_certificates() {
        let ca = rogue_ca("bench test CA");
        let server = mint_with(&MintSpec::new("server", &[]), &ca.0, &ca.1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server.cert_pem, &server.key_pem))
            .client_ca_root(Certificate::from_pem(&ca.0));
        tokio::spawn(
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(SignerServer::new(Judge))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = mint_with(&MintSpec::new("client", &[]), &ca.0, &ca.1);
        let conn = Conn::connect(&addr, &ca.0, &client.cert_pem, &client.key_pem)
            .await
            .unwrap();
        // Many streams on the one connection at once.
        let calls: Vec<_> = (0..32)
            .map(|_| {
                let c = conn.clone();
                tokio::spawn(async move { c.sign(named("ok")).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap(), 1);
        }
        // A batch counts each of its certificates, and only when every
        // one of them is fresh.
        assert_eq!(conn.sign(batch_of(&["ok", "ok", "ok"])).await.unwrap(), 3);
        let err = conn.sign(batch_of(&["ok", "denied"])).await.unwrap_err();
        assert!(
            err.contains("batch item") && err.contains("no approval"),
            "{err}"
        );
        let err = conn.sign(batch_of(&["ok", "replay"])).await.unwrap_err();
        assert!(err.contains("replayed"), "{err}");
        let err = conn.sign(named("denied")).await.unwrap_err();
        assert!(
            err.contains("grpc-status 9") && err.contains("no approval for denied"),
            "{err}"
        );
        let err = conn.sign(named("replay")).await.unwrap_err();
        assert!(err.contains("replayed"), "{err}");
        let err = conn.sign(named("empty")).await.unwrap_err();
        assert!(err.contains("empty"), "{err}");
        // A body that is not a SignRequest frame is the server's to refuse.
        let err = conn
            .sign(Bytes::from_static(b"\0\0\0\0\x09ab"))
            .await
            .unwrap_err();
        assert!(err.contains("grpc-status"), "{err}");
        // A client certificate from another CA gets no connection.
        let other = rogue_ca("other CA");
        let stranger = mint_with(&MintSpec::new("stranger", &[]), &other.0, &other.1);
        let refused = match Conn::connect(&addr, &ca.0, &stranger.cert_pem, &stranger.key_pem).await
        {
            Err(_) => true,
            Ok(c) => c.sign(named("ok")).await.is_err(),
        };
        assert!(
            refused,
            "a client certificate from an unknown CA was served"
        );
    }

    #[test]
    fn frames_and_unframes_one_message() {
        let answer = SignResponse {
            certificate: b"-----BEGIN CERTIFICATE-----".to_vec(),
            serial_number: "01".into(),
            replayed: false,
            ..SignResponse::default()
        };
        let framed = frame(&answer);
        assert_eq!(framed[0], 0);
        assert_eq!(framed.len(), 5 + answer.encoded_len());
        let back = SignResponse::decode(unframe(&framed).unwrap()).unwrap();
        assert_eq!(back, answer);
    }

    #[test]
    fn decodes_grpc_messages() {
        assert_eq!(percent_decode(b"no%20approval%3A%20x"), "no approval: x");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%e2%9c%93"), "%zz\u{2713}");
    }

    #[test]
    fn refuses_short_compressed_and_mislengthed_bodies() {
        assert!(unframe(&[0, 0, 0]).unwrap_err().contains("shorter"));
        assert!(
            unframe(&[1, 0, 0, 0, 0])
                .unwrap_err()
                .contains("compressed")
        );
        let err = unframe(&[0, 0, 0, 0, 9, 1, 2]).unwrap_err();
        assert!(err.contains("says 9 bytes, body has 2"), "{err}");
    }
}
