//! The S3 backend: an [`ObjectStorage`] on object_store's `AmazonS3` client,
//! for one bucket of AWS S3 or of an S3-compatible server (`endpoint`).
//!
//! Blobs sit at their whole path in the bucket. Requests to AWS are
//! virtual-hosted style (`{bucket}.s3.{region}.amazonaws.com`); to a
//! configured endpoint they are path-style (`{endpoint}/{bucket}/{key}`), which
//! every S3-compatible server takes. Uploads are S3 multipart uploads; the
//! controller grants agents presigned UploadPart URLs, one per part.

use std::sync::Arc;

use object_store::StaticCredentialProvider;
use object_store::aws::{AmazonS3Builder, AwsCredential};

use crate::object::{self, ObjectStorage, Service};
use crate::{Endpoint, Secret};

/// The backend of bucket `bucket`.
pub(crate) fn storage(
    bucket: &str,
    region: &str,
    endpoint: Option<&Endpoint>,
    access_key_id: &str,
    secret_access_key: &Secret,
    session_token: Option<&Secret>,
    part_size: u64,
) -> Result<ObjectStorage, object_store::Error> {
    let credential = AwsCredential {
        key_id: access_key_id.to_owned(),
        secret_key: secret_access_key.expose().to_owned(),
        token: session_token.map(|token| token.expose().to_owned()),
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_credentials(Arc::new(StaticCredentialProvider::new(credential)))
        .with_retry(object::retry_config())
        .with_client_options(object::client_options(endpoint.is_some_and(Endpoint::is_http)));
    builder = match endpoint {
        Some(endpoint) => builder
            .with_endpoint(endpoint.as_str())
            .with_virtual_hosted_style_request(false),
        None => builder.with_virtual_hosted_style_request(true),
    };
    Ok(ObjectStorage::new(Arc::new(builder.build()?), Service::S3, part_size))
}
