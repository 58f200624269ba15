//! netwatch's az-shaped command line (DESIGN §5): the commands of Azure's
//! "manage packet captures with the Azure CLI" guide with `az` replaced by
//! `netwatch`, the same flags, and the same output as az prints.
//!
//! Every command runs in two steps: its flags are checked and turned into
//! the requests to make (`prepare`, no I/O: a bad flag or bad `--filters`
//! JSON fails here, before anything is sent, with exit code 2), then the
//! requests are made (`execute`). Output goes through az's shape
//! ([`shape`]) and format ([`output`]); errors print as az prints them
//! ([`error`]).
//!
//! # Layout
//! - [`output`]: az's output formats (`json`, `jsonc`, `table`, `tsv`, `yaml`,
//!   `none`) and `--query` (JMESPath), byte for byte as az prints them.
//! - [`settings`]: az's global flags and the client settings (server, token,
//!   CA, subscription) from flags, environment and the configuration file.
//! - [`client`]: HTTPS to the controller, ARM errors, long-running operations.
//! - [`shape`]: az's flattening, output schemas and `resourceGroup`.
//! - [`error`]: [`error::CliError`], its exit code and az's error text.
//! - `commands`: `vm`, `network watcher [packet-capture]`, `storage account`,
//!   `login`.
//! - `download`: a capture's file, through the controller, with a progress bar.

pub mod client;
mod commands;
mod download;
pub mod error;
pub mod output;
mod output_standin;
pub mod settings;
pub mod shape;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use netwatch_api::resource::SubscriptionId;
use serde_json::Value;

use crate::client::Client;
use crate::error::CliError;
use crate::output_standin::{OutputFormat, Query, render};
use crate::settings::{ConfigFile, GlobalArgs, Settings};

pub use commands::login::LoginArgs;
pub use commands::network::NetworkArgs;
pub use commands::storage::StorageArgs;
pub use commands::vm::VmArgs;

/// The client commands, for the binary's command line.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage virtual machines: the hosts that run the netwatch agent.
    Vm(VmArgs),
    /// Manage network watchers and their packet captures.
    Network(NetworkArgs),
    /// Manage storage accounts: where capture files are kept.
    Storage(StorageArgs),
    /// Check a controller's URL and token and save them for the client commands.
    Login(LoginArgs),
}

impl Command {
    fn global(&self) -> &GlobalArgs {
        match self {
            Self::Vm(args) => &args.global,
            Self::Network(args) => &args.global,
            Self::Storage(args) => &args.global,
            Self::Login(args) => &args.global,
        }
    }
}

/// Runs a client command: prints its output on standard output and any
/// error on standard error as az does; the exit code is az's (0, 1, 2 for
/// usage errors, 3 for a resource that does not exist).
pub fn run(command: Command) -> ExitCode {
    let started = Instant::now();
    let verbose = command.global().verbose || command.global().debug;
    let env = |name: &str| std::env::var_os(name);
    let result = run_with(command, env);
    if verbose {
        eprintln!("INFO: Command ran in {:.3} seconds", started.elapsed().as_secs_f64());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", err.render());
            ExitCode::from(err.exit_code())
        }
    }
}

/// [`run`] with the environment passed in (for the configuration file's
/// path), returning the error instead of printing it.
pub fn run_with(command: Command, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<(), CliError> {
    let global = command.global().clone();
    let printer = Printer::new(&global)?;
    let subscription = settings::subscription(global.subscription.as_deref())?;
    let prepared = commands::prepare(command, &subscription)?;
    let config_path = settings::config_path(env);
    if let commands::Prepared::Login(login) = prepared {
        return commands::login::execute(login, &global, config_path.as_deref(), &printer);
    }
    let file = match &config_path {
        Some(path) => ConfigFile::load(path)?,
        None => None,
    };
    let settings = Settings::resolve(&global, file.as_ref(), config_path.as_deref())?;
    let client = Client::new(&settings, global.debug)?;
    let context = Context {
        client,
        settings,
        subscription,
        only_show_errors: global.only_show_errors,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Unexpected(format!("start the async runtime: {err}")))?;
    let output = runtime.block_on(commands::execute(prepared, &context))?;
    if let Some(value) = output {
        printer.print(&value)?;
    }
    Ok(())
}

/// What every command's `execute` gets.
#[derive(Debug)]
pub(crate) struct Context {
    pub client: Client,
    pub settings: Settings,
    pub subscription: SubscriptionId,
    pub only_show_errors: bool,
}

impl Context {
    /// az's `WARNING: …` on standard error, unless `--only-show-errors`.
    pub fn warn(&self, message: &str) {
        if !self.only_show_errors {
            eprintln!("WARNING: {message}");
        }
    }
}

/// `--output` and `--query`, checked before anything is sent.
#[derive(Debug)]
pub(crate) struct Printer {
    format: OutputFormat,
    query: Option<Query>,
}

impl Printer {
    fn new(global: &GlobalArgs) -> Result<Self, CliError> {
        let format = global.output.parse::<OutputFormat>().map_err(|_| {
            CliError::Usage(format!(
                "argument --output/-o: invalid choice: '{}' (choose from 'json', 'jsonc', 'none', 'table', 'tsv', 'yaml', 'yamlc')",
                global.output
            ))
        })?;
        let query = match &global.query {
            Some(text) => Some(Query::parse(text).map_err(|err| {
                CliError::Usage(format!(
                    "argument --query: invalid jmespath_type value: '{text}': {err}"
                ))
            })?),
            None => None,
        };
        Ok(Self { format, query })
    }

    /// Renders `value` in the chosen format and writes it to standard output.
    pub fn print(&self, value: &Value) -> Result<(), CliError> {
        let text = render(value, self.format, self.query.as_ref())
            .map_err(|err| CliError::Usage(format!("argument --query: {err}")))?;
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) is not worth an error message.
        let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
        Ok(())
    }

    /// Whether `--query` on `value` gives something true in JMESPath's sense
    /// (for `wait --custom`).
    pub fn query_is_true(value: &Value, query: &Query) -> Result<bool, CliError> {
        let text = render(value, OutputFormat::Json, Some(query))
            .map_err(|err| CliError::Usage(format!("argument --custom: {err}")))?;
        let result: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        Ok(match result {
            Value::Null => false,
            Value::Bool(b) => b,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Number(_) => true,
        })
    }
}
