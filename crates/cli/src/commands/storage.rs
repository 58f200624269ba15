//! `netwatch storage account list/show/create/delete`: the controller's
//! storage accounts (where capture files go), as az's `storage account …`
//! print them (the SDK's `StorageAccount`, api-version 2025-08-01).
//!
//! `create` takes az's flags (`-n`, `-g`, `-l`, `--sku`, `--kind`, `--tags`)
//! and netwatch's own for where the files go: a directory on the controller
//! (the default: one the controller picks), an Azure Blob container, an S3
//! bucket or a Google Cloud Storage bucket (`--credentials FILE`: a service
//! account's key file, read here and sent to the controller, which keeps it;
//! without it the controller uses its machine's own identity). Secrets may come from the environment variables az and the AWS
//! tools read (`AZURE_STORAGE_KEY`, `AZURE_STORAGE_SAS_TOKEN`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), so
//! they stay out of the shell's history; only the chosen backend's are read.
//! `delete` asks first on a terminal, as az does; elsewhere it needs `--yes`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::Subcommand;
use netwatch_api::resource::{Location, ResourceGroupName, ResourceName, SubscriptionId};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::flag_error;
use crate::error::CliError;
use crate::settings::GlobalArgs;
use crate::{Context, shape};

/// What az's `storage account list/show` send.
const API_VERSION: &str = "2025-08-01";

#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    pub(crate) command: StorageCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Manage storage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// List storage accounts.
    List {
        /// Only the accounts of this resource group.
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: Option<String>,
    },
    /// Show a storage account.
    Show {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The account's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
    /// Create a storage account, or change one made before: where capture files go.
    Create(Box<CreateArgs>),
    /// Delete a storage account made with `create` (its files stay where they are).
    Delete {
        #[arg(long, short = 'g', value_name = "GROUP")]
        resource_group: String,
        /// The account's name.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// Do not prompt for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Where the files of a new account go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// A directory on the controller's machine.
    Local,
    /// A container of an Azure storage account (or Azurite).
    Azureblob,
    /// A bucket of S3 or an S3-compatible server.
    S3,
    /// A bucket of Google Cloud Storage.
    Gcs,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The account's name: 3-24 lower-case letters and digits.
    #[arg(long, short = 'n', value_name = "NAME")]
    name: String,
    #[arg(long, short = 'g', value_name = "GROUP")]
    resource_group: String,
    /// Location; default the controller's first.
    #[arg(long, short = 'l', value_name = "LOCATION")]
    location: Option<String>,
    /// The SKU: only Standard ones keep packet captures.
    #[arg(long, value_name = "SKU", default_value = "Standard_LRS")]
    sku: String,
    /// The account kind.
    #[arg(long, value_name = "KIND", default_value = "StorageV2")]
    kind: String,
    /// Space-separated tags: key[=value] [key[=value] ...].
    #[arg(long, value_name = "TAG", num_args = 0..)]
    tags: Option<Vec<String>>,
    /// Where the files go; default gcs with --credentials, s3 with --bucket,
    /// azureblob with --azure-account, else local.
    #[arg(long, value_enum, value_name = "BACKEND", help_heading = "Backend")]
    backend: Option<BackendKind>,
    /// local: an absolute directory on the controller; default one the controller picks.
    #[arg(long, value_name = "DIR", help_heading = "Backend")]
    path: Option<String>,
    /// azureblob: the Azure storage account's name.
    #[arg(long, value_name = "NAME", help_heading = "Backend")]
    azure_account: Option<String>,
    /// azureblob: the container; default network-watcher-logs.
    #[arg(long, value_name = "NAME", help_heading = "Backend")]
    container: Option<String>,
    /// azureblob: the account key [env: AZURE_STORAGE_KEY].
    #[arg(long, value_name = "KEY", help_heading = "Backend")]
    account_key: Option<String>,
    /// azureblob: a SAS token for the container, instead of a key [env: AZURE_STORAGE_SAS_TOKEN].
    #[arg(long, value_name = "TOKEN", help_heading = "Backend")]
    sas_token: Option<String>,
    /// azureblob, s3, gcs: the service's URL (Azurite, an S3-compatible server, a GCS emulator).
    #[arg(long, value_name = "URL", help_heading = "Backend")]
    endpoint: Option<String>,
    /// s3, gcs: the bucket.
    #[arg(long, value_name = "NAME", help_heading = "Backend")]
    bucket: Option<String>,
    /// s3: the bucket's region; default us-east-1.
    #[arg(long, value_name = "REGION", help_heading = "Backend")]
    region: Option<String>,
    /// s3: the access key's id [env: AWS_ACCESS_KEY_ID].
    #[arg(long, value_name = "ID", help_heading = "Backend")]
    access_key_id: Option<String>,
    /// s3: the access key's secret [env: AWS_SECRET_ACCESS_KEY].
    #[arg(long, value_name = "SECRET", help_heading = "Backend")]
    secret_access_key: Option<String>,
    /// s3: a session token, for temporary credentials [env: AWS_SESSION_TOKEN].
    #[arg(long, value_name = "TOKEN", help_heading = "Backend")]
    session_token: Option<String>,
    /// gcs: a service account's key file (JSON), sent to the controller; default the controller's own identity.
    #[arg(long, value_name = "FILE", help_heading = "Backend")]
    credentials: Option<std::path::PathBuf>,
    /// Bytes per part of uploads; default 8 MiB (at least 5 MiB for azureblob and s3).
    #[arg(long, value_name = "BYTES", help_heading = "Backend")]
    part_size: Option<u64>,
}

#[derive(Debug)]
pub(crate) enum Prepared {
    List(Option<ResourceGroupName>),
    Show(ResourceGroupName, ResourceName),
    Create(ResourceGroupName, ResourceName, Value),
    Delete(ResourceGroupName, ResourceName),
}

fn group(text: &str) -> Result<ResourceGroupName, CliError> {
    ResourceGroupName::parse("--resource-group", text).map_err(|err| flag_error("--resource-group/-g", &err))
}

fn account_name(text: &str) -> Result<ResourceName, CliError> {
    ResourceName::parse("--name", text).map_err(|err| flag_error("--name/-n", &err))
}

pub(crate) fn prepare(command: StorageCommand, _subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    let StorageCommand::Account { command } = command;
    Ok(match command {
        AccountCommand::List { resource_group } => Prepared::List(resource_group.as_deref().map(group).transpose()?),
        AccountCommand::Show { resource_group, name } => Prepared::Show(group(&resource_group)?, account_name(&name)?),
        AccountCommand::Create(args) => {
            let group = group(&args.resource_group)?;
            let name = account_name(&args.name)?;
            let body = create_body(*args, &|var| std::env::var(var).ok().filter(|value| !value.is_empty()))?;
            Prepared::Create(group, name, body)
        }
        AccountCommand::Delete {
            resource_group,
            name,
            yes,
        } => {
            let (group, name) = (group(&resource_group)?, account_name(&name)?);
            if !yes {
                confirm(&format!(
                    "Delete storage account {name}? Its files stay where they are."
                ))?;
            }
            Prepared::Delete(group, name)
        }
    })
}

/// The PUT body of `create`; `env` reads the environment.
fn create_body(args: CreateArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, CliError> {
    let usage = |message: String| CliError::Usage(message);
    let backend = args.backend.unwrap_or(if args.credentials.is_some() {
        BackendKind::Gcs
    } else if args.bucket.is_some() {
        BackendKind::S3
    } else if args.azure_account.is_some() {
        BackendKind::Azureblob
    } else {
        BackendKind::Local
    });
    // Flags of another backend are a mistake to point out, not to drop.
    use BackendKind::{Azureblob, Gcs, Local, S3};
    let given: [(&str, bool, &[BackendKind]); 12] = [
        ("--path", args.path.is_some(), &[Local]),
        ("--azure-account", args.azure_account.is_some(), &[Azureblob]),
        ("--container", args.container.is_some(), &[Azureblob]),
        ("--account-key", args.account_key.is_some(), &[Azureblob]),
        ("--sas-token", args.sas_token.is_some(), &[Azureblob]),
        ("--endpoint", args.endpoint.is_some(), &[Azureblob, S3, Gcs]),
        ("--bucket", args.bucket.is_some(), &[S3, Gcs]),
        ("--region", args.region.is_some(), &[S3]),
        ("--access-key-id", args.access_key_id.is_some(), &[S3]),
        ("--secret-access-key", args.secret_access_key.is_some(), &[S3]),
        ("--session-token", args.session_token.is_some(), &[S3]),
        ("--credentials", args.credentials.is_some(), &[Gcs]),
    ];
    if let Some((flag, _, owners)) = given.iter().find(|(_, set, owners)| *set && !owners.contains(&backend)) {
        let owners: Vec<&str> = owners.iter().map(|owner| backend_name(*owner)).collect();
        return Err(usage(format!(
            "argument {flag}: it is for --backend {}, but this account's backend is {}",
            owners.join(" or "),
            backend_name(backend)
        )));
    }
    let mut netwatch = Map::new();
    netwatch.insert("kind".to_owned(), json!(backend_name(backend)));
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            netwatch.insert(key.to_owned(), json!(value));
        }
    };
    match backend {
        BackendKind::Local => put("path", args.path),
        BackendKind::Azureblob => {
            let account = args.azure_account.ok_or_else(|| {
                usage(
                    "argument --azure-account is required with --backend azureblob: the Azure storage account's name"
                        .to_owned(),
                )
            })?;
            put("account", Some(account));
            put("container", args.container);
            // A key or SAS given on the command line wins over the environment's.
            let (key, sas) = match (args.account_key, args.sas_token) {
                (None, None) => (env("AZURE_STORAGE_KEY"), env("AZURE_STORAGE_SAS_TOKEN")),
                given => given,
            };
            put("key", key);
            put("sas", sas);
            put("endpoint", args.endpoint);
        }
        BackendKind::S3 => {
            let bucket = args
                .bucket
                .ok_or_else(|| usage("argument --bucket is required with --backend s3".to_owned()))?;
            put("bucket", Some(bucket));
            put("region", args.region);
            put("endpoint", args.endpoint);
            put("accessKeyId", args.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID")));
            put(
                "secretAccessKey",
                args.secret_access_key.or_else(|| env("AWS_SECRET_ACCESS_KEY")),
            );
            put("sessionToken", args.session_token.or_else(|| env("AWS_SESSION_TOKEN")));
        }
        BackendKind::Gcs => {
            let bucket = args
                .bucket
                .ok_or_else(|| usage("argument --bucket is required with --backend gcs".to_owned()))?;
            put("bucket", Some(bucket));
            put("endpoint", args.endpoint);
            if let Some(file) = args.credentials {
                let key = std::fs::read_to_string(&file).map_err(|err| {
                    usage(format!(
                        "argument --credentials: cannot read {}: {err}; give a service account's key file (JSON), \
                         or leave --credentials out for the controller's own identity",
                        file.display()
                    ))
                })?;
                put("serviceAccountKey", Some(key));
            }
        }
    }
    if let Some(part_size) = args.part_size {
        netwatch.insert("partSize".to_owned(), json!(part_size));
    }
    let mut body = json!({
        "sku": {"name": args.sku},
        "kind": args.kind,
        "properties": {"netwatch": netwatch},
    });
    if let Some(location) = args.location {
        let location = Location::parse("--location", &location).map_err(|err| flag_error("--location/-l", &err))?;
        body["location"] = json!(location.as_str());
    }
    if let Some(tags) = args.tags {
        let tags: Map<String, Value> = tags
            .iter()
            .map(|tag| match tag.split_once('=') {
                Some((key, value)) => (key.to_owned(), json!(value)),
                None => (tag.clone(), json!("")),
            })
            .collect();
        body["tags"] = Value::Object(tags);
    }
    Ok(body)
}

fn backend_name(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Local => "local",
        BackendKind::Azureblob => "azureblob",
        BackendKind::S3 => "s3",
        BackendKind::Gcs => "gcs",
    }
}

/// Asks `question` on the terminal; anything but y/yes is a no. Without a
/// terminal there is nobody to ask: a usage error naming `--yes`.
fn confirm(question: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "this deletes without a terminal to confirm on: add --yes/-y".to_owned(),
        ));
    }
    let mut stderr = std::io::stderr();
    // A prompt that cannot be written is asked anyway: the answer decides.
    let _ = write!(stderr, "{question} (y/n): ");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|err| CliError::Usage(format!("cannot read the answer: {err}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Usage("not deleted: the answer was not yes".to_owned()))
    }
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let sub = &context.subscription;
    match prepared {
        Prepared::List(group) => {
            let path = match group {
                Some(group) => {
                    format!("/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts")
                }
                None => format!("/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts"),
            };
            let value = context.client.get(&path, API_VERSION).await?;
            Ok(Some(shape::list(&value, shape::storage_account)))
        }
        Prepared::Show(group, name) => {
            let value = context
                .client
                .get(&account_path(sub, &group, &name), API_VERSION)
                .await?;
            Ok(Some(shape::storage_account(&value)))
        }
        Prepared::Create(group, name, body) => {
            let url = context.client.url(&account_path(sub, &group, &name), API_VERSION);
            let first = context
                .client
                .begin(Method::PUT, &url, Some(&body), &[200, 201, 202])
                .await?;
            let value = context.client.wait(&Method::PUT, &url, first).await?;
            Ok(value.map(|value| shape::storage_account(&value)))
        }
        Prepared::Delete(group, name) => {
            let url = context.client.url(&account_path(sub, &group, &name), API_VERSION);
            context.client.begin(Method::DELETE, &url, None, &[200, 204]).await?;
            Ok(None)
        }
    }
}

fn account_path(sub: &SubscriptionId, group: &ResourceGroupName, name: &ResourceName) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{name}")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        create: CreateArgs,
    }

    fn body(args: &[&str], env: &[(&str, &str)]) -> Result<Value, CliError> {
        let cli = Cli::try_parse_from([&["create", "-n", "acct1", "-g", "rg"], args].concat()).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        create_body(cli.create, &|var| {
            env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn the_backend_follows_the_flags_and_secrets_come_from_the_environment() {
        let local = body(&[], &[("AWS_SECRET_ACCESS_KEY", "unused")]).unwrap();
        assert_eq!(
            local,
            json!({"sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "properties": {"netwatch": {"kind": "local"}}})
        );
        let s3 = body(
            &[
                "--bucket",
                "b",
                "-l",
                "West US",
                "--tags",
                "a=1",
                "b",
                "--part-size",
                "6291456",
            ],
            &[
                ("AWS_ACCESS_KEY_ID", "id-from-env"),
                ("AWS_SECRET_ACCESS_KEY", "secret-from-env"),
                ("AZURE_STORAGE_KEY", "k"),
            ],
        )
        .unwrap();
        assert_eq!(
            s3["properties"]["netwatch"],
            json!({"kind": "s3", "bucket": "b", "accessKeyId": "id-from-env", "secretAccessKey": "secret-from-env",
                   "partSize": 6_291_456})
        );
        assert_eq!(
            (&s3["location"], &s3["tags"]),
            (&json!("westus"), &json!({"a": "1", "b": ""}))
        );
        // A flag wins over the environment; a SAS on the command line keeps the environment's key out.
        let azure = body(
            &[
                "--azure-account",
                "acct",
                "--sas-token",
                "sv=1&sig=2",
                "--endpoint",
                "http://127.0.0.1:10000/acct",
            ],
            &[("AZURE_STORAGE_KEY", "env-key")],
        )
        .unwrap();
        assert_eq!(
            azure["properties"]["netwatch"],
            json!({"kind": "azureblob", "account": "acct", "sas": "sv=1&sig=2", "endpoint": "http://127.0.0.1:10000/acct"})
        );
    }

    /// A GCS account: the key file is read here and sent whole; without it
    /// the controller's own identity.
    #[test]
    fn a_gcs_account_sends_its_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.json");
        std::fs::write(&file, r#"{"type": "service_account"}"#).unwrap();
        let gcs = body(
            &[
                "--bucket",
                "caps",
                "--credentials",
                file.to_str().unwrap(),
                "--endpoint",
                "http://127.0.0.1:4443",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            gcs["properties"]["netwatch"],
            json!({"kind": "gcs", "bucket": "caps", "endpoint": "http://127.0.0.1:4443",
                   "serviceAccountKey": r#"{"type": "service_account"}"#})
        );
        let own = body(&["--backend", "gcs", "--bucket", "caps"], &[]).unwrap();
        assert_eq!(own["properties"]["netwatch"], json!({"kind": "gcs", "bucket": "caps"}));
    }

    #[test]
    fn flags_of_another_backend_are_usage_errors() {
        let rows: [(&[&str], &str); 8] = [
            (
                &["--bucket", "b", "--container", "c"],
                "argument --container: it is for --backend azureblob, but this account's backend is s3",
            ),
            (
                &["--backend", "azureblob"],
                "argument --azure-account is required with --backend azureblob",
            ),
            (&["--backend", "s3"], "argument --bucket is required with --backend s3"),
            (
                &["--endpoint", "http://x"],
                "argument --endpoint: it is for --backend azureblob or s3 or gcs, but this account's backend is local",
            ),
            (
                &["--backend", "gcs"],
                "argument --bucket is required with --backend gcs",
            ),
            (
                &["--backend", "gcs", "--bucket", "b", "--region", "r"],
                "argument --region: it is for --backend s3, but this account's backend is gcs",
            ),
            (
                &["--bucket", "b", "--credentials", "/nonexistent/key.json"],
                "argument --credentials: cannot read /nonexistent/key.json",
            ),
            (
                &["--backend", "s3", "--bucket", "b", "--credentials", "/k.json"],
                "argument --credentials: it is for --backend gcs, but this account's backend is s3",
            ),
        ];
        for (args, message) in rows {
            match body(args, &[]) {
                Err(CliError::Usage(text)) => assert!(text.contains(message), "{text:?} lacks {message:?}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
