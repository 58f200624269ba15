//! The Azure Blob backend: an [`ObjectStorage`] on object_store's
//! `MicrosoftAzure` client, for one container of one storage account (or
//! Azurite, through `endpoint`).
//!
//! Blobs sit at their path in the container, less the container's own name
//! when the path starts with it ([`ObjectStorage::key`]). Uploads are Put
//! Block / Put Block List: with the account key the controller grants agents a
//! blob SAS (`sp=w`, one blob, until the grant's ttl) to put blocks
//! themselves; with only a SAS it cannot make a narrower one, so parts go
//! through the controller ([`crate::Backend::put_part`]).

use std::sync::Arc;

use object_store::StaticCredentialProvider;
use object_store::azure::{AzureAccessKey, AzureCredential, MicrosoftAzureBuilder, split_sas};

use crate::object::{self, ObjectStorage, Service};
use crate::{Endpoint, Secret};

/// How the account proves itself.
pub(crate) enum Auth<'a> {
    Key(&'a Secret),
    Sas(&'a Secret),
}

/// The backend of container `container` of storage account `account`.
pub(crate) fn storage(
    account: &str,
    container: &str,
    auth: Auth<'_>,
    endpoint: Option<&Endpoint>,
    part_size: u64,
) -> Result<ObjectStorage, object_store::Error> {
    let (credential, grants) = match auth {
        Auth::Key(key) => (AzureCredential::AccessKey(AzureAccessKey::try_new(key.expose())?), true),
        Auth::Sas(sas) => (AzureCredential::SASToken(split_sas(sas.expose())?), false),
    };
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_container_name(container)
        .with_credentials(Arc::new(StaticCredentialProvider::new(credential)))
        .with_retry(object::retry_config())
        .with_client_options(object::client_options(endpoint.is_some_and(Endpoint::is_http)));
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint.as_str().to_owned());
    }
    let service = Service::Azure {
        container: container.to_owned(),
        grants,
    };
    Ok(ObjectStorage::new(Arc::new(builder.build()?), service, part_size))
}
