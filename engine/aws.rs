//! The one way tally configures AWS SDK clients (S3 listing, EMR, the Redshift Data API,
//! Secrets Manager): the standard configuration chain with an HTTPS client on rustls with *ring*.
//!
//! Why not the SDKs' default client: it brings rustls on aws-lc-rs, a second crypto library
//! beside the *ring* that object_store and sqlx already use, in a binary every EMR node
//! downloads. One backend also means one set of TLS behaviours to reason about.

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// `aws_config::defaults` with tally's HTTPS client; add a region or load as usual.
pub fn config_loader() -> ConfigLoader {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(https)
}
