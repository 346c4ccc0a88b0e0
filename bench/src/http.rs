//! A minimal HTTP/1.1 keep-alive client for `cfssl serve`: one request at
//! a time per connection (HTTP/1.1 has no multiplexing), bodies framed by
//! Content-Length or chunked encoding.
//!
//! It must never count a response as a success without reading all of it
//! and finding cfssl's `"success":true`.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    /// Connects to `addr` (host:port).
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    /// POSTs `body` (JSON) to `path`, returning (status, body).
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        let io = |e: std::io::Error| e.to_string();
        self.stream.get_mut().write_all(&req).await.map_err(io)?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await.map_err(io)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await.map_err(io)? == 0 {
                return Err("connection closed in headers".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.map_err(io)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0u8; n + 2];
                self.stream.read_exact(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            let n = length.ok_or("response without Content-Length")?;
            out.resize(n, 0);
            self.stream.read_exact(&mut out).await.map_err(io)?;
        }
        Ok((status, out))
    }
}

/// The `cfssl serve` sign call body for `csr_pem`.
pub fn cfssl_sign_body(csr_pem: &str) -> Vec<u8> {
    serde_json::json!({ "certificate_request": csr_pem })
        .to_string()
        .into_bytes()
}

/// Checks a cfssl API answer: HTTP 200 and `"success": true` with a
/// certificate.
pub fn cfssl_ok(status: u16, body: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("HTTP {status}: not JSON: {e}"))?;
    if status == 200
        && v["success"] == true
        && v["result"]["certificate"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", v["errors"]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn judges_cfssl_answers() {
        let good = br#"{"success":true,"result":{"certificate":"-----BEGIN CERTIFICATE-----\n"},"errors":[]}"#;
        assert!(cfssl_ok(200, good).is_ok());
        let bad = br#"{"success":false,"result":null,"errors":[{"code":1000,"message":"x"}]}"#;
        assert!(cfssl_ok(400, bad).unwrap_err().contains("1000"));
        assert!(cfssl_ok(200, b"nope").is_err());
        let body = cfssl_sign_body("PEM\n");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["certificate_request"], "PEM\n");
    }
}
