//! Fuzz target `pcap_repair`: `netwatch_capture::pcap::repair` on any file
//! contents. A file repair accepts is cut to a prefix of itself that
//! pcap-file (another reader) reads as a header and whole records, as many
//! as the report counts; repairing it again changes nothing. A file repair
//! refuses is left as it was.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netwatch_capture::pcap::{Records, RepairError, repair};
use pcap_file::pcap::PcapParser;

/// One scratch file per fuzzing process, rewritten for each input; in
/// memory when it can be (repair syncs what it cuts).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("netwatch-fuzz-pcap-{}.pcap", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write scratch file");
    let report = match repair(path) {
        Ok(report) => report,
        Err(RepairError::NotPcap { .. }) => {
            assert!(Records::new(data).is_err());
            assert_eq!(std::fs::read(path).expect("read back"), data, "refused file changed");
            return;
        }
        Err(err) => panic!("repair: {err}"),
    };
    let repaired = std::fs::read(path).expect("read back");
    let removed = usize::try_from(report.bytes_removed).expect("fits");
    assert_eq!(repaired.len() + removed, data.len());
    assert_eq!(repaired[..], data[..repaired.len()], "not a prefix");

    // pcap-file reads it to the end: a header, then whole records.
    let (mut rest, parser) = PcapParser::new(&repaired).expect("pcap-file reads the header");
    let mut records = 0u64;
    while !rest.is_empty() {
        match parser.next_raw_packet(rest) {
            Ok((next, _)) => rest = next,
            Err(err) => panic!("pcap-file: record {records}: {err}"),
        }
        records += 1;
    }
    assert_eq!(records, report.records);

    let again = repair(path).expect("repair again");
    assert_eq!(again.bytes_removed, 0, "not idempotent");
    assert_eq!(again.records, report.records);
});
