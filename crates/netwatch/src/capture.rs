//! `netwatch capture`: a local, tcpdump-like capture with the engine every agent
//! runs, taking Azure's filters and limits (DESIGN §3) as flags.
//!
//! Prints tcpdump's kind of "listening on" line and one-line summary on stderr;
//! `--stats-json` adds a JSON line of counters each second and at the end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use netwatch_api::filter::{CaptureFilter, parse_filters_json};
use netwatch_capture::pcap::LinkType;
use netwatch_capture::session::{DEFAULT_BLOCK_COUNT, DEFAULT_BLOCK_SIZE, DEFAULT_NICE, DEFAULT_RETIRE_MS};
use netwatch_capture::{
    Capture, CaptureConfig, CaptureStats, Interface, Limits, OpenError, OutputSpec, RingConfig, Rotation,
};

use crate::UsageError;

/// Azure's largest `bytesToCapturePerPacket`, `totalBytesPerSession` and `fileSizeInBytes`.
const U32_MAX: u64 = 4_294_967_295;

#[derive(Debug, clap::Args)]
#[command(after_help = "Filters are Azure's PacketCaptureFilter list, e.g.\n  \
    --filters '[{\"protocol\":\"TCP\",\"localIPAddress\":\"10.0.0.3\",\"remotePort\":\"443;8443\"},{\"protocol\":\"UDP\"}]'\n\
with netwatch's fields too: protocol ICMP/ICMPv6 with icmpType and icmpCode, CIDR blocks (10.0.0.0/8), \
tcpFlags (\"SYN;!ACK\"), direction (inbound/outbound) and bpfExpression (a tcpdump expression, compiled by \
libpcap: apt-get install libpcap0.8).\n\
A packet is kept when any filter matches; a filter matches when every field it sets matches, in either direction \
(its bpfExpression too). --explain says in words what a list keeps.")]
pub struct Args {
    /// Interface to capture on, or `any` for all of them (Linux cooked headers, as tcpdump -i any).
    #[arg(short = 'i', long = "interface", default_value = "any")]
    interface: String,

    /// pcap file to write; `-` writes to standard output (e.g. `| wireshark -k -i -`).
    /// With --continuous the files are FILE's name with _00001, _00002, … before the extension.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: String,

    /// Azure filters: a JSON list of PacketCaptureFilter objects, or @FILE to read them from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    filters: Option<String>,

    /// Bytes kept of each packet, link header included (bytesToCapturePerPacket); 0 keeps whole packets.
    #[arg(long, value_name = "BYTES", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=U32_MAX))]
    capture_size: u64,

    /// Stop when the file reaches this many bytes (totalBytesPerSession); 0 = no limit.
    #[arg(long, value_name = "BYTES", default_value_t = 1_073_741_824,
          value_parser = clap::value_parser!(u64).range(0..=U32_MAX), conflicts_with = "continuous")]
    capture_limit: u64,

    /// Stop after this many seconds (timeLimitInSeconds, at most 18000); 0 = no limit.
    #[arg(long, value_name = "SECONDS", default_value_t = 18_000,
          value_parser = clap::value_parser!(u64).range(0..=18_000), conflicts_with = "continuous")]
    time_limit: u64,

    /// Continuous capture: a ring of --file-count files of --file-size bytes, oldest deleted first.
    #[arg(long)]
    continuous: bool,

    /// Files kept by a continuous capture (fileCount).
    #[arg(long, value_name = "N", default_value_t = 10, requires = "continuous",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    file_count: u32,

    /// Bytes per file of a continuous capture (fileSizeInBytes).
    #[arg(long, value_name = "BYTES", default_value_t = 104_857_600, requires = "continuous",
          value_parser = clap::value_parser!(u64).range(1024..=U32_MAX))]
    file_size: u64,

    /// Seconds a continuous capture runs at most (sessionTimeLimitInSeconds, at most 604800).
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400, requires = "continuous",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    session_time_limit: u64,

    /// Stop after writing this many packets.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Print the counters as a JSON line on stderr every second and at the end.
    #[arg(long)]
    stats_json: bool,

    /// Number of blocks in the kernel's capture ring.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOCK_COUNT,
          value_parser = clap::value_parser!(u32).range(2..=4096))]
    ring_blocks: u32,

    /// Bytes per ring block: a power of two from 4096 to 268435456 (suffixes KiB, MiB allowed).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BLOCK_SIZE, value_parser = parse_block_size)]
    ring_block_size: u32,

    /// Milliseconds after which a partly filled ring block is written out.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RETIRE_MS,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    ring_retire_ms: u64,

    /// Nice value of the capture thread (-20..19); the default runs it ahead of ordinary
    /// work so that a busy CPU does not make it drop packets; 0 leaves the priority as is.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_NICE, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,

    /// Print the compiled kernel filter program and exit without capturing.
    #[arg(short = 'd', long)]
    dump_filter: bool,

    /// Say in words what --filters keeps and exit without capturing (a dry run).
    #[arg(long)]
    explain: bool,
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB") {
        (n, 1u64 << 10)
    } else if let Some(n) = t.strip_suffix("MiB") {
        (n, 1 << 20)
    } else {
        (t, 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{s}\" is not a size: use bytes, or a number with KiB or MiB"))?;
    let bytes = n
        .checked_mul(mult)
        .filter(|b| (4096..=1 << 28).contains(b) && b.is_power_of_two());
    bytes
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| format!("\"{s}\" must be a power of two from 4KiB to 256MiB"))
}

fn read_filters(arg: Option<&str>) -> Result<Vec<CaptureFilter>> {
    let Some(arg) = arg else { return Ok(Vec::new()) };
    let (json, source) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read --filters file {path}: {e}")))?,
            format!("--filters file {path}"),
        ),
        None => (arg.to_owned(), "--filters".to_owned()),
    };
    let mut filters = parse_filters_json(&json).map_err(|e| UsageError(format!("{source}: {e}")))?;
    // bpfExpression: compiled here, by libpcap (loaded only now).
    for (index, filter) in filters.iter_mut().enumerate() {
        if let Some(expression) = &mut filter.expression {
            let program = netwatch_bpf::expression::compile(&expression.text).map_err(|e| {
                UsageError(format!(
                    "{source}: filters[{index}].bpfExpression {:?} does not compile: {e}",
                    expression.text
                ))
            })?;
            expression.program = Some(program);
        }
    }
    Ok(filters)
}

fn output_spec(args: &Args) -> Result<OutputSpec> {
    if args.write == "-" {
        if args.continuous {
            return Err(UsageError("--continuous writes a ring of files: give -w a file path, not -".into()).into());
        }
        return Ok(OutputSpec::Stdout);
    }
    let path = PathBuf::from(&args.write);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "-w {}: directory {} does not exist; create it or write elsewhere",
            args.write,
            dir.display()
        ))
        .into());
    }
    if path.is_dir() {
        return Err(UsageError(format!(
            "-w {} is a directory: give a file name, e.g. {}/capture.pcap",
            args.write, args.write
        ))
        .into());
    }
    Ok(if args.continuous {
        OutputSpec::Ring {
            path,
            rotation: Rotation {
                file_count: args.file_count,
                file_size: args.file_size,
                max_age: None,
            },
            first_seq: 1,
        }
    } else {
        OutputSpec::File(path)
    })
}

fn link_name(link: LinkType) -> &'static str {
    match link {
        LinkType::Ethernet => "EN10MB (Ethernet)",
        LinkType::LinuxSll2 => "LINUX_SLL2 (Linux cooked v2)",
    }
}

fn stats_line(stats: &CaptureStats, reason: Option<&str>) -> String {
    let mut v = serde_json::to_value(stats).unwrap_or_default();
    if let (Some(r), Some(obj)) = (reason, v.as_object_mut()) {
        obj.insert("stopReason".into(), r.into());
    }
    v.to_string()
}

pub fn run(args: Args) -> Result<ExitCode> {
    let filters = read_filters(args.filters.as_deref())?;
    let snaplen = u32::try_from(args.capture_size).unwrap_or(u32::MAX);
    if args.explain {
        print!("{}", netwatch_api::filter::explain(&filters));
        return Ok(ExitCode::SUCCESS);
    }
    if args.dump_filter {
        let program = netwatch_capture::bpf::compile(&filters, if snaplen == 0 { 262_144 } else { snaplen })?;
        print!("{program}");
        return Ok(ExitCode::SUCCESS);
    }
    let output = output_spec(&args)?;
    let limits = if args.continuous {
        Limits {
            max_bytes: None,
            time_limit: Some(Duration::from_secs(args.session_time_limit)),
            max_packets: args.count,
        }
    } else {
        Limits {
            max_bytes: (args.capture_limit > 0).then_some(args.capture_limit),
            time_limit: (args.time_limit > 0).then(|| Duration::from_secs(args.time_limit)),
            max_packets: args.count,
        }
    };
    let config = CaptureConfig {
        interface: Interface::parse(&args.interface),
        filters,
        snaplen,
        limits,
        output,
        ring: RingConfig {
            block_size: args.ring_block_size,
            block_count: args.ring_blocks,
            retire: Duration::from_millis(args.ring_retire_ms),
        },
        nice: (args.nice != 0).then_some(args.nice),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("install the SIGINT/SIGTERM handler")?;
    }
    let capture = Capture::open(config).map_err(|e| match e {
        OpenError::NoSuchInterface(_) | OpenError::Filter(_) => anyhow::Error::new(UsageError(e.to_string())),
        e => anyhow::Error::new(e).context(format!("start capturing on {}", args.interface)),
    })?;
    eprintln!(
        "netwatch: listening on {}, link-type {}, snapshot length {} bytes",
        args.interface,
        link_name(capture.link_type()),
        capture.snaplen()
    );
    let stats_json = args.stats_json;
    let mut progress = |s: &CaptureStats| {
        if stats_json {
            eprintln!("{}", stats_line(s, None));
        }
    };
    let outcome = capture.run(&stop, &mut progress);
    let s = outcome.stats;
    let reason = match &outcome.result {
        Ok(r) => r.to_string(),
        Err(_) => "Error".to_owned(),
    };
    let target = match outcome.files.as_slice() {
        [] => "standard output".to_owned(),
        [one] => one.display().to_string(),
        [first, .., last] => format!("{} files, {} .. {}", outcome.files.len(), name(first), name(last)),
    };
    eprintln!(
        "{} packets captured, {} received by filter, {} dropped by kernel; {} bytes written to {}; stopped: {}",
        s.packets_captured, s.packets_seen, s.kernel_drops, s.file_bytes, target, reason
    );
    if stats_json {
        eprintln!("{}", stats_line(&s, Some(&reason)));
    }
    match outcome.result {
        // Every stop reason is a normal end: the limits are what the user asked for.
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("capture stopped early; what was written is kept")),
    }
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
