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
//! - `commands`: `vm`, `vmss`, `network watcher [packet-capture |
//!   flight-recorder | trigger]`, `storage account`, `token`, `resource tag`,
//!   `login`.
//! - `download`: a capture's file (or a scale-set capture's merged pcapng),
//!   through the controller, with a progress bar.

pub mod client;
mod commands;
mod download;
pub mod error;
pub mod extcap;
mod live;
pub mod output;
pub mod settings;
pub mod shape;
#[cfg(test)]
mod testing;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Instant;

use netwatch_api::resource::SubscriptionId;
use serde_json::Value;

use crate::client::Client;
use crate::error::CliError;
use crate::output::{OutputFormat, Query, render, render_with};
use crate::settings::{ConfigFile, GlobalArgs, Settings};

pub use commands::login::LoginArgs;
pub use commands::network::NetworkArgs;
pub use commands::resource::ResourceArgs;
pub use commands::storage::StorageArgs;
pub use commands::token::TokenArgs;
pub use commands::vm::VmArgs;
pub use commands::vmss::VmssArgs;

/// The client commands, for the binary's command line.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage virtual machines: the hosts that run the netwatch agent.
    Vm(VmArgs),
    /// Manage virtual machine scale sets: named groups of hosts that joined with one key.
    Vmss(VmssArgs),
    /// Manage network watchers, their packet captures, flight recorders and alert triggers.
    Network(NetworkArgs),
    /// Manage storage accounts: where capture files are kept.
    Storage(StorageArgs),
    /// Manage client tokens and their roles (reader, operator, admin).
    Token(TokenArgs),
    /// Tag resources (VMs, scale sets): captures may choose hosts by tag.
    Resource(ResourceArgs),
    /// Check a controller's URL and token and save them for the client commands.
    Login(LoginArgs),
}

impl Command {
    fn global(&self) -> &GlobalArgs {
        match self {
            Self::Vm(args) => &args.global,
            Self::Vmss(args) => &args.global,
            Self::Network(args) => &args.global,
            Self::Storage(args) => &args.global,
            Self::Token(args) => &args.global,
            Self::Resource(args) => &args.global,
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
    let table_transformer = commands::table_transformer(&prepared);
    let table_footer = commands::table_footer(&prepared);
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
        printer.print_with(&value, table_transformer)?;
        if printer.shows_table()
            && !global.only_show_errors
            && let Some(footer) = table_footer.and_then(|footer| footer(&value))
        {
            eprintln!("{footer}");
        }
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
        let format = global
            .output
            .parse::<OutputFormat>()
            .map_err(|err| CliError::Usage(format!("netwatch: {err}")))?;
        // az colours jsonc and yamlc only on a terminal.
        let format = format.with_color(std::io::stdout().is_terminal());
        let query = match &global.query {
            Some(text) => Some(
                Query::parse(text)
                    .map_err(|err| CliError::Usage(format!("{err}\n{}", crate::output::QUERY_REFERENCE)))?,
            ),
            None => None,
        };
        Ok(Self { format, query })
    }

    /// Whether the output is az's table as the command shapes it (`-o table`
    /// without `--query`).
    pub fn shows_table(&self) -> bool {
        self.format == OutputFormat::Table && self.query.is_none()
    }

    /// Renders `value` in the chosen format and writes it to standard output.
    pub fn print(&self, value: &Value) -> Result<(), CliError> {
        self.print_with(value, None)
    }

    /// [`Printer::print`] with the command's table transformer (a JMESPath
    /// expression az applies for `-o table` without `--query`).
    pub fn print_with(&self, value: &Value, table_transformer: Option<&str>) -> Result<(), CliError> {
        let transformer = table_transformer
            .map(Query::parse)
            .transpose()
            .map_err(|err| CliError::Unexpected(format!("a table transformer does not parse: {err}")))?;
        let text =
            render_with(value, self.format, self.query.as_ref(), transformer.as_ref()).map_err(CliError::Output)?;
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) is not worth an error message.
        let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
        Ok(())
    }

    /// Whether `query` on `value` gives something true in JMESPath's sense
    /// (for `wait --custom`).
    pub fn query_is_true(value: &Value, query: &Query) -> Result<bool, CliError> {
        let text = render(value, OutputFormat::Json, Some(query)).map_err(CliError::Output)?;
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// The binary's command line in miniature: `propagate_version` as in
    /// `netwatch`'s main, which must not clash with any command's flags.
    #[derive(Debug, Parser)]
    #[command(name = "netwatch", version, propagate_version = true)]
    struct Cli {
        #[command(subcommand)]
        command: super::Command,
    }

    /// Bad invocations of every group, run whole against a listening server:
    /// each fails with exit 2 and a message naming what is wrong, and the
    /// server never sees a connection.
    #[test]
    fn bad_invocations_send_no_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = format!("https://{}", listener.local_addr().unwrap());
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "create",
                    "-g",
                    "rg",
                    "-n",
                    "pc",
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    "[{\"protocol\":\"TCP\"",
                ],
                "argument --filters: filters is not valid JSON",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "create",
                    "-g",
                    "rg",
                    "-n",
                    "pc",
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--filters",
                    "[{\"protocol\":\"GRE\"}]",
                ],
                "filters[0].protocol",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "create",
                    "-g",
                    "rg",
                    "-n",
                    "pc",
                    "--vm",
                    "vm",
                    "--file-path",
                    "/var/captures/a.pcap",
                ],
                "must end with the '*.cap' extension",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "create",
                    "-g",
                    "rg",
                    "-n",
                    "pc",
                    "--vm",
                    "vm",
                    "--storage-account",
                    "st",
                    "--time-limit",
                    "99999",
                ],
                "'99999' is greater than the maximum 18000",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "show",
                    "-n",
                    "pc",
                    "-l",
                    "west/us",
                ],
                "argument --location/-l",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "list",
                    "-l",
                    "westus",
                    "-o",
                    "xml",
                ],
                "'xml' is not a valid value for '--output'",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "list",
                    "-l",
                    "westus",
                    "--query",
                    "[].foo(",
                ],
                "argument --query: invalid jmespath_type value: '[].foo('",
            ),
            (
                &["network", "watcher", "list", "--subscription", "mine"],
                "argument --subscription \"mine\" is not a valid subscription id",
            ),
            (
                &["network", "watcher", "configure", "-l", "eastus", "--enabled", "true"],
                "'--resource-group' required",
            ),
            (
                &[
                    "vm",
                    "extension",
                    "set",
                    "-g",
                    "rg",
                    "--vm-name",
                    "vm",
                    "--publisher",
                    "Microsoft.Azure.NetworkWatcher",
                    "-n",
                    "NetworkWatcherAgentWindows",
                ],
                "runs on Linux only",
            ),
            (
                &["vm", "extension", "show", "-g", "rg", "--vm-name", "vm", "-n", "Other"],
                "use --name NetworkWatcherAgentLinux",
            ),
            (&["vm", "show", "-g", "r g", "-n", "vm"], "argument --resource-group/-g"),
            (
                &[
                    "vmss",
                    "delete-instances",
                    "-g",
                    "rg",
                    "-n",
                    "web",
                    "--instance-ids",
                    "1",
                    "x",
                ],
                "argument --instance-ids: \"x\" is not an instance id",
            ),
            (
                &["vmss", "show", "-g", "rg", "-n", "web", "--instance-id", "-1"],
                "argument --instance-id",
            ),
            (
                &["vmss", "list-instances", "-g", "rg", "-n", "w/b"],
                "argument --name/-n",
            ),
            (
                &[
                    "vmss",
                    "extension",
                    "set",
                    "-g",
                    "rg",
                    "--vmss-name",
                    "web",
                    "-n",
                    "NetworkWatcherAgentLinux",
                    "--publisher",
                    "Microsoft.Azure.NetworkWatcher",
                    "--key-expires-in",
                    "2592001",
                ],
                "argument --key-expires-in: 2592001 is more than the maximum 2592000",
            ),
            (
                &[
                    "vmss",
                    "extension",
                    "set",
                    "-g",
                    "rg",
                    "--vmss-name",
                    "web",
                    "-n",
                    "NetworkWatcherAgentLinux",
                    "--publisher",
                    "Microsoft.Azure.NetworkWatcher",
                    "--key-max-uses",
                    "0",
                ],
                "argument --key-max-uses",
            ),
            (
                &["vmss", "extension", "list", "-g", "rg", "--vmss-name", "web."],
                "argument --vmss-name",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "create",
                    "-g",
                    "rg",
                    "-n",
                    "pc",
                    "--target-type",
                    "AzureVMSS",
                    "--target",
                    "web",
                    "--storage-account",
                    "st",
                    "--include",
                    "0",
                    "0",
                ],
                "argument --include/--exclude: scope.include[1] \"0\" is named twice",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "packet-capture",
                    "download",
                    "-n",
                    "pc",
                    "-l",
                    "westus",
                    "--merged",
                    "-f",
                    "",
                ],
                "argument --output-file/-f",
            ),
            (
                &["storage", "account", "show", "-g", "rg", "-n", "bad name"],
                "argument --name/-n",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "flight-recorder",
                    "set",
                    "-l",
                    "westus",
                    "--vm",
                    "web-1",
                    "-g",
                    "rg",
                    "--max-bytes",
                    "12XB",
                ],
                "argument --max-bytes: \"12XB\" is not a size",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "flight-recorder",
                    "set",
                    "-l",
                    "westus",
                    "-g",
                    "rg",
                ],
                "give what to record on: --vm NAME_OR_ID",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "trigger",
                    "create",
                    "-l",
                    "westus",
                    "-n",
                    "t",
                    "--file-path",
                    "/var/captures/t.cap",
                    "--seconds-before",
                    "4000",
                ],
                "argument --seconds-before: capture.secondsBefore 4000 is out of range",
            ),
            (
                &[
                    "network",
                    "watcher",
                    "trigger",
                    "create",
                    "-l",
                    "westus",
                    "-n",
                    "t",
                    "--file-path",
                    "/var/captures/t.cap",
                    "--source",
                    "Splunk",
                ],
                "argument --source: source \"Splunk\"",
            ),
            // An empty --server, so that a NETWATCH_URL in the environment cannot stand in.
            (&["login", "--server", "", "--token", "t"], "required: --server"),
            (
                &["login", "--server", "http://192.0.2.1:80", "--token", "t"],
                "plain http to another machine",
            ),
        ];
        for (args, expected) in cases {
            let mut argv = vec!["netwatch"];
            argv.extend_from_slice(args);
            argv.extend_from_slice(&["--server", &server, "--token", "t"]);
            if args[0] == "login" {
                // login's own flags are the ones under test.
                argv.truncate(args.len() + 1);
            }
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|err| panic!("{argv:?}: {err}"));
            let err = super::run_with(cli.command, |_| None).expect_err(&format!("{argv:?} should fail"));
            assert_eq!(err.exit_code(), 2, "{argv:?}: {err}");
            assert!(
                err.to_string().contains(expected),
                "{argv:?}:\n  got      {err}\n  expected {expected}"
            );
            let accepted = listener.accept();
            assert!(
                matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "{argv:?} sent a request"
            );
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_after_any_command() {
        let cli = Cli::try_parse_from([
            "netwatch",
            "network",
            "watcher",
            "packet-capture",
            "list",
            "-l",
            "westus",
            "-o",
            "table",
            "--query",
            "[].name",
            "--only-show-errors",
            "--subscription",
            "00000000-0000-0000-0000-000000000001",
        ])
        .unwrap();
        let global = match &cli.command {
            super::Command::Network(args) => &args.global,
            other => panic!("{other:?}"),
        };
        assert_eq!(global.output, "table");
        assert_eq!(global.query.as_deref(), Some("[].name"));
        assert!(global.only_show_errors);
    }
}
