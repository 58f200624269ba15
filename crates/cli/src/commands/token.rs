//! `netwatch token create/list/revoke`: client tokens with a role (reader,
//! operator, admin), made through the controller's `/netwatch/v1/tokens`
//! (admin only). A new token is printed once: the controller keeps only its
//! digest. netwatch's own command; az has none like it.

use clap::Subcommand;
use netwatch_api::resource::SubscriptionId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Context;
use crate::client::arm_error;
use crate::error::CliError;
use crate::settings::GlobalArgs;

/// Where the controller serves tokens.
const TOKENS_PATH: &str = "/netwatch/v1/tokens";

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub(crate) command: TokenCommand,
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
}

/// The roles a client token may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenRole {
    /// Reads, capture status and downloads.
    Reader,
    /// And creates, stops and deletes packet captures.
    Operator,
    /// And everything else: hosts, storage accounts, tokens.
    Admin,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a client token: printed this once, keep it safe.
    Create {
        /// A name to list and revoke it by: letters, digits, '.', '_', '-'.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// What it may do.
        #[arg(long, value_enum, value_name = "ROLE")]
        role: TokenRole,
    },
    /// List the client tokens made with `create` and not revoked (never the tokens).
    List,
    /// Revoke a client token: it stops working at once.
    Revoke {
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug)]
pub(crate) enum Prepared {
    Create(String, TokenRole),
    List,
    Revoke(String),
}

pub(crate) fn prepare(command: TokenCommand, _subscription: &SubscriptionId) -> Result<Prepared, CliError> {
    Ok(match command {
        TokenCommand::Create { name, role } => Prepared::Create(check_name(name)?, role),
        TokenCommand::List => Prepared::List,
        TokenCommand::Revoke { name } => Prepared::Revoke(check_name(name)?),
    })
}

/// The controller's rule, checked before any request.
fn check_name(name: String) -> Result<String, CliError> {
    let good = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if good {
        Ok(name)
    } else {
        Err(CliError::Usage(format!(
            "argument --name/-n: {name:?} is not 1-64 letters, digits, '.', '_' or '-'"
        )))
    }
}

fn role_name(role: TokenRole) -> &'static str {
    match role {
        TokenRole::Reader => "reader",
        TokenRole::Operator => "operator",
        TokenRole::Admin => "admin",
    }
}

pub(crate) async fn execute(prepared: Prepared, context: &Context) -> Result<Option<Value>, CliError> {
    let base = format!("{}{TOKENS_PATH}", context.client.base());
    let (method, url, body) = match &prepared {
        Prepared::Create(name, role) => (
            Method::POST,
            base,
            Some(json!({"name": name, "role": role_name(*role)})),
        ),
        Prepared::List => (Method::GET, base, None),
        Prepared::Revoke(name) => (Method::DELETE, format!("{base}/{name}"), None),
    };
    let answer = context.client.exchange(method, &url, body.as_ref()).await?;
    if !answer.status.is_success() {
        return Err(arm_error(answer));
    }
    Ok(match prepared {
        Prepared::Create(..) => Some(answer.body),
        Prepared::List => Some(answer.body.get("value").cloned().unwrap_or_else(|| json!([]))),
        Prepared::Revoke(name) => {
            if answer.status.as_u16() == 204 {
                context.warn(&format!("no token named {name:?}: nothing was revoked"));
            }
            None
        }
    })
}
