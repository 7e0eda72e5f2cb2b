//! What every platform client shares: how a call that got no usable answer is told apart (no
//! answer, an error status, an answer not understood), and a counted JSON `GET`.

/// Why a poll got nothing.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("platform unreachable: {0}")]
    Unreachable(String),
    #[error("platform answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("platform answer not understood: {0}")]
    BadAnswer(String),
    /// The platform answered, but hid part of what was asked from mot's credentials: what it
    /// said cannot be taken for the whole state.
    #[error("platform withheld part of its answer: {0}")]
    Withheld(String),
}

impl From<reqwest::Error> for PollError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            PollError::BadAnswer(with_causes(&e))
        } else {
            PollError::Unreachable(with_causes(&e))
        }
    }
}

/// An error with every cause under it (`error sending request for url (…)` alone does not say
/// whether the connection was refused, reset or timed out).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = c.source();
    }
    said
}

/// `resp` when the platform answered with success, else its status and the start of its body.
pub async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, PollError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        let status = resp.status().as_u16();
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        Err(PollError::Status { status, body })
    }
}

/// `GET url` on a platform API, its JSON answer as a `T`; the call is counted as `operation` of
/// `platform` on `/metrics`.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    platform: &'static str,
    operation: &'static str,
    url: String,
) -> Result<T, PollError> {
    super::calls::timed(platform, operation, async {
        checked(http.get(url).send().await?)
            .await?
            .json()
            .await
            .map_err(PollError::from)
    })
    .await
}

/// A client builder for the `https://` (and `http://`) calls mot makes, trusting the system's
/// roots and the certificates of `tls.ca_file`.
pub fn builder(tls: &crate::config::TlsConfig) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &tls.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("tls.ca_file {}: cannot read: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file {}: not PEM certificates: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "tls.ca_file {}: holds no certificate",
                path.display()
            ));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}
