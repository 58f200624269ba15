//! Writes test input for scripts/bench-merge.sh: FILES classic pcap files
//! (nanosecond, little-endian, Ethernet, what netwatch's agents write) of
//! TOTAL_MIB MiB in all into DIR, as `host-NN.pcap`. Each file's timestamps
//! rise by a random whole number of microseconds (mean: one packet per host per
//! FILES µs), so the files interleave throughout and some packets of different
//! files share a timestamp. Frames: 40 % 66-byte ACK-sized, 10 % 100-1400
//! bytes, 50 % 1514 bytes; half sent by the host (source MAC 02:00:00:00:00:01),
//! half received by it. Deterministic: the same arguments write the same bytes.
//!
//! ```text
//! gen_pcap DIR FILES TOTAL_MIB
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// 2023-11-14T22:13:20Z, in nanoseconds.
const START_NS: u64 = 1_700_000_000_000_000_000;

/// xorshift64*: fast, good enough for sizes and gaps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn write_file(path: &Path, index: u64, files: u64, bytes: u64) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_3c4d_u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&262_144u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    out.write_all(&header)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut ts = START_NS;
    let mut written = header.len() as u64;
    let mut frame = vec![0u8; 1514];
    let mut packets = 0u64;
    while written < bytes {
        let r = rng.next();
        ts += 1000 * (1 + r % (2 * files));
        let len = match (r >> 16) % 10 {
            0..=3 => 66,
            4 => 100 + (r >> 24) as usize % 1300,
            _ => 1514,
        };
        let (dst, src) = if (r >> 40) & 1 == 0 {
            (PEER_MAC, HOST_MAC)
        } else {
            (HOST_MAC, PEER_MAC)
        };
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&src);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&u16::try_from(len - 14).expect("frames are short").to_be_bytes());
        frame[22..24].copy_from_slice(&[64, 6]);
        frame[26..30].copy_from_slice(&[10, 0, 0, 1]);
        frame[30..34].copy_from_slice(&[10, 0, 0, u8::try_from(index % 250).expect("below 250") + 2]);
        frame[34..42].copy_from_slice(&packets.to_be_bytes());
        let caplen = u32::try_from(len).expect("frames are short");
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&u32::try_from(ts / 1_000_000_000).expect("seconds fit").to_le_bytes());
        record[4..8].copy_from_slice(&u32::try_from(ts % 1_000_000_000).expect("below 10^9").to_le_bytes());
        record[8..12].copy_from_slice(&caplen.to_le_bytes());
        record[12..16].copy_from_slice(&caplen.to_le_bytes());
        out.write_all(&record)?;
        out.write_all(&frame[..len])?;
        written += 16 + len as u64;
        packets += 1;
    }
    out.flush()?;
    Ok(packets)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [dir, files, mib] => files
            .parse::<u64>()
            .ok()
            .zip(mib.parse::<u64>().ok())
            .map(|(f, m)| (dir, f, m)),
        _ => None,
    };
    let Some((dir, files, mib)) = parsed.filter(|(_, files, _)| *files > 0) else {
        eprintln!("usage: gen_pcap DIR FILES TOTAL_MIB");
        return ExitCode::from(2);
    };
    let per_file = (mib << 20) / files;
    for index in 0..files {
        let path = Path::new(dir).join(format!("host-{index:02}.pcap"));
        if let Err(err) = write_file(&path, index, files, per_file) {
            eprintln!("Error: write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
