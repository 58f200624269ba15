//! The engine's only unsafe code: the raw syscalls of an AF_PACKET capture and
//! the TPACKET_V3 ring they map, behind a small safe API.
//!
//! Sources of truth: packet(7); the kernel's `Documentation/networking/packet_mmap.rst`
//! (ring layout, block ownership hand-over); `include/uapi/linux/if_packet.h`
//! (the structs, via `libc`); `Documentation/networking/filter.rst` (socket filters).
//!
//! # Safety
//! What this module guarantees to the safe code around it:
//! - every file descriptor is an [`OwnedFd`]; nothing here closes or reuses one
//!   it does not own;
//! - [`RxRing`] owns the mapping of the kernel's receive ring and unmaps it on
//!   drop; it borrows the socket's fd only to create the mapping (the kernel keeps
//!   the ring alive for as long as the mapping exists, even if the socket closes);
//! - a [`Block`] gives out `&[u8]` views of one ring block only while user space
//!   owns that block (its status has `TP_STATUS_USER`, read with Acquire), and hands
//!   the block back to the kernel (status `TP_STATUS_KERNEL`, stored with Release)
//!   when dropped, after the last view of it has ended (the views borrow the guard);
//! - every other function is a plain syscall on memory that outlives the call.
#![allow(unsafe_code, reason = "the one module that talks to the kernel directly")]

use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::bpf::Insn;

/// A syscall that failed, named as it was called.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SysError {
    /// The call and, for socket options, the option: `setsockopt(PACKET_RX_RING)`.
    pub call: &'static str,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

impl SysError {
    fn last(call: &'static str) -> Self {
        Self {
            call,
            source: io::Error::last_os_error(),
        }
    }

    /// The errno, for callers that explain common failures (EPERM, ENODEV …).
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// How the packet socket hands packets over: with their link-layer header
/// (`SOCK_RAW`) or without it, the link facts moved to a `sockaddr_ll` beside
/// the packet (`SOCK_DGRAM`, "cooked", what the `any` device needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Raw,
    Dgram,
}

/// `ETH_P_ALL` in network byte order, as `socket`/`bind` take it.
fn eth_p_all_be() -> u16 {
    u16::try_from(libc::ETH_P_ALL)
        .expect("ETH_P_ALL fits in 16 bits")
        .to_be()
}

/// An AF_PACKET socket, as yet receiving nothing: it is opened with protocol 0, so
/// no packet reaches it until [`PacketSocket::bind`] names `ETH_P_ALL`. The filter
/// and the ring are set up before that, so no unfiltered packet ever gets in.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// `socket(AF_PACKET, SOCK_RAW|SOCK_DGRAM | SOCK_CLOEXEC, 0)`, packet(7).
    pub fn open(kind: SocketKind) -> Result<Self, SysError> {
        let ty = match kind {
            SocketKind::Raw => libc::SOCK_RAW,
            SocketKind::Dgram => libc::SOCK_DGRAM,
        };
        // SAFETY: plain syscall with integer arguments; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, ty | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(SysError::last("socket(AF_PACKET)"));
        }
        // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    fn setsockopt<T>(&self, level: i32, name: i32, value: &T, call: &'static str) -> Result<(), SysError> {
        let len = libc::socklen_t::try_from(size_of::<T>()).expect("option structs are small");
        // SAFETY: `value` is a live reference for the whole call and `len` is its exact
        // size; the kernel only reads it. The return value is checked on the next line.
        let rc = unsafe { libc::setsockopt(self.fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
        if rc < 0 { Err(SysError::last(call)) } else { Ok(()) }
    }

    /// `setsockopt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V3)`: block-based ring
    /// with nanosecond timestamps (packet_mmap.rst, "TPACKET_V3").
    pub fn set_packet_version_v3(&self) -> Result<(), SysError> {
        let v = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_VERSION, &v, "setsockopt(PACKET_VERSION)")
    }

    /// `setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog)`: the classic BPF
    /// program runs in the kernel on every packet; its return value is the number of
    /// bytes to keep (0 drops the packet). filter.rst, "Socket filtering".
    pub fn attach_filter(&self, program: &[Insn]) -> Result<(), SysError> {
        let mut insns: Vec<libc::sock_filter> = program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let len = u16::try_from(insns.len()).map_err(|_| SysError {
            call: "setsockopt(SO_ATTACH_FILTER)",
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "filter program longer than 65535 instructions",
            ),
        })?;
        let prog = libc::sock_fprog {
            len,
            filter: insns.as_mut_ptr(),
        };
        // `insns` outlives the call below (it is dropped at the end of this function).
        self.setsockopt(
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog,
            "setsockopt(SO_ATTACH_FILTER)",
        )
    }

    /// `setsockopt(fd, SOL_PACKET, PACKET_RX_RING, tpacket_req3)` then `mmap` of the
    /// whole ring (packet_mmap.rst: "the ring is mapped as one contiguous area").
    pub fn map_rx_ring(&self, geometry: RingGeometry) -> Result<RxRing, SysError> {
        let req = libc::tpacket_req3 {
            tp_block_size: geometry.block_size,
            tp_block_nr: geometry.block_count,
            tp_frame_size: geometry.frame_size,
            tp_frame_nr: geometry.frame_count(),
            tp_retire_blk_tov: geometry.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        self.setsockopt(
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "setsockopt(PACKET_RX_RING)",
        )?;
        RxRing::map(self.fd.as_fd(), geometry)
    }

    /// `bind(fd, sockaddr_ll{ sll_protocol: ETH_P_ALL, sll_ifindex })`: from here on
    /// packets flow. `ifindex` 0 is every interface (the `any` device).
    pub fn bind(&self, ifindex: u32) -> Result<(), SysError> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits in u16");
        sll.sll_protocol = eth_p_all_be();
        sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| SysError {
            call: "bind(AF_PACKET)",
            source: io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"),
        })?;
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("sockaddr_ll is small");
        // SAFETY: `sll` lives across the call and `len` is its exact size; the kernel
        // only reads it. Checked on the next line.
        let rc = unsafe { libc::bind(self.fd.as_raw_fd(), (&raw const sll).cast(), len) };
        if rc < 0 {
            Err(SysError::last("bind(AF_PACKET)"))
        } else {
            Ok(())
        }
    }

    /// `getsockopt(fd, SOL_PACKET, PACKET_STATISTICS)`: packets the filter passed and
    /// packets dropped for want of ring space since the previous call (the kernel
    /// resets both on read; `tp_packets` includes the drops). packet(7).
    pub fn take_statistics(&self) -> Result<KernelStats, SysError> {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = libc::socklen_t::try_from(size_of::<libc::tpacket_stats_v3>()).expect("small struct");
        // SAFETY: `st` and `len` are live, writable and `len` holds st's size; the kernel
        // writes at most `len` bytes. Checked on the next line.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        if rc < 0 {
            return Err(SysError::last("getsockopt(PACKET_STATISTICS)"));
        }
        Ok(KernelStats {
            packets: u64::from(st.tp_packets),
            drops: u64::from(st.tp_drops),
        })
    }

    /// `poll(fd, POLLIN, timeout)`: true when a ring block is ready for user space.
    /// EINTR (a signal, e.g. the SIGINT that stops a capture) counts as "not ready".
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool, SysError> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one live, writable pollfd and we pass nfds = 1. Checked below.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(SysError {
                call: "poll(AF_PACKET)",
                source: err,
            });
        }
        if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(SysError {
                call: "poll(AF_PACKET)",
                source: io::Error::other("socket error (was the interface removed?)"),
            });
        }
        Ok(rc > 0)
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Counters the kernel keeps per packet socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets that passed the filter (captured or dropped).
    pub packets: u64,
    /// Packets that passed the filter but found no room in the ring.
    pub drops: u64,
}

/// `if_nametoindex(3)`: `None` when no interface of that name exists in this
/// network namespace.
pub fn interface_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The hardware type (`ARPHRD_*`) of an interface, by `ioctl(SIOCGIFHWADDR)`.
pub fn interface_hardware_type(sock: &PacketSocket, name: &str) -> Result<u16, SysError> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(SysError {
            call: "ioctl(SIOCGIFHWADDR)",
            source: io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"),
        });
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: `req` is a live, writable ifreq with a NUL-terminated name; SIOCGIFHWADDR
    // writes only into it. Checked on the next line.
    let rc = unsafe { libc::ioctl(sock.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req) };
    if rc < 0 {
        return Err(SysError::last("ioctl(SIOCGIFHWADDR)"));
    }
    // SAFETY: after SIOCGIFHWADDR the union holds `ifru_hwaddr`, a plain sockaddr.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(family)
}

/// `setpriority(PRIO_PROCESS, 0, nice)`: the calling thread's nice value (on Linux
/// a per-thread attribute, setpriority(2) "BUGS"). Lowering it below 0 needs root
/// or CAP_SYS_NICE.
pub fn set_thread_nice(nice: i32) -> Result<(), SysError> {
    // SAFETY: plain syscall with integer arguments; checked on the next line.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc < 0 {
        Err(SysError::last("setpriority(PRIO_PROCESS)"))
    } else {
        Ok(())
    }
}

/// `sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`: starts writing the
/// file's dirty pages to the disk and returns without waiting for them (it
/// may wait for the device's queue). What is on its way cannot pile up into
/// one long `fdatasync` later.
pub fn start_writeback(file: &std::fs::File) -> Result<(), SysError> {
    // SAFETY: plain syscall on a descriptor `file` keeps open for the call.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc < 0 {
        Err(SysError::last("sync_file_range(SYNC_FILE_RANGE_WRITE)"))
    } else {
        Ok(())
    }
}

/// The size of a memory page, which ring blocks must be a multiple of.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The shape of a TPACKET_V3 ring: `block_count` blocks of `block_size` bytes;
/// the kernel fills one block at a time with as many packets as fit, and hands it
/// to user space when it is full or `retire_ms` after its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes per block; a multiple of the page size (packet_mmap.rst).
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u32,
    /// V3 packs packets of any size, but the kernel still checks a frame size:
    /// it must divide `block_size` and be at least `TPACKET3_HDRLEN`.
    pub frame_size: u32,
    /// Milliseconds after which a partly filled block is handed over.
    pub retire_ms: u32,
}

impl RingGeometry {
    fn frame_count(&self) -> u32 {
        (self.block_size / self.frame_size) * self.block_count
    }

    /// Total bytes of the ring.
    pub fn bytes(&self) -> usize {
        self.block_size as usize * self.block_count as usize
    }
}

/// The mapped receive ring. Blocks are taken in order, as the kernel fills them.
#[derive(Debug)]
pub struct RxRing {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    block_count: usize,
    next: usize,
}

// SAFETY: the mapping is owned by this value alone (no aliasing `RxRing` exists) and
// the kernel's side of the protocol is thread-agnostic, so moving the ring to the
// capture thread is sound. It is not `Sync`: blocks are taken through `&mut self`.
unsafe impl Send for RxRing {}

impl RxRing {
    fn map(fd: BorrowedFd<'_>, geometry: RingGeometry) -> Result<Self, SysError> {
        let len = geometry.bytes();
        // SAFETY: a fresh shared mapping of the socket's ring, of exactly the size the
        // kernel just allocated (PACKET_RX_RING); no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::last("mmap(PACKET_RX_RING)"));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| SysError {
            call: "mmap(PACKET_RX_RING)",
            source: io::Error::other("kernel returned a null mapping"),
        })?;
        Ok(Self {
            base,
            len,
            block_size: geometry.block_size as usize,
            block_count: geometry.block_count as usize,
            next: 0,
        })
    }

    fn status_word(&self, index: usize) -> &AtomicU32 {
        let offset = index * self.block_size
            + offset_of!(libc::tpacket_block_desc, hdr)
            + offset_of!(libc::tpacket_hdr_v1, block_status);
        // SAFETY: `offset` lies inside the mapping (index < block_count), so the
        // pointer stays within one allocated object.
        let word = unsafe { self.base.as_ptr().add(offset) }.cast::<u32>();
        // SAFETY: `word` is 4-byte aligned (blocks are page aligned, the field's offset
        // is 8) and valid for the life of the mapping, which `self` bounds. The kernel
        // and we access it concurrently, which is what AtomicU32 is for.
        unsafe { AtomicU32::from_ptr(word) }
    }

    /// Blocks in the ring.
    pub fn block_count(&self) -> usize {
        self.block_count
    }

    /// Whether the next block is ready for user space.
    pub fn ready(&self) -> bool {
        // Acquire pairs with the smp_wmb() in the kernel's prb_close_block, issued
        // before prb_flush_block stores TP_STATUS_USER (net/packet/af_packet.c): once
        // we see the status, the block's packets are visible too.
        self.status_word(self.next).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The next block, if the kernel has handed it to user space. The block goes back
    /// to the kernel when the returned guard drops.
    pub fn take_block(&mut self) -> Option<Block<'_>> {
        if !self.ready() {
            return None;
        }
        let index = self.next;
        Some(Block { ring: self, index })
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, and no `Block`
        // borrow can outlive `self`.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap of the packet ring failed");
    }
}

/// One ring block owned by user space. Returns to the kernel on drop.
#[derive(Debug)]
pub struct Block<'r> {
    ring: &'r mut RxRing,
    index: usize,
}

impl Block<'_> {
    /// The whole block: a `tpacket_block_desc`, then its packets.
    pub fn bytes(&self) -> &[u8] {
        let offset = self.index * self.ring.block_size;
        // SAFETY: `offset` is the start of block `index` < block_count: inside the mapping.
        let start = unsafe { self.ring.base.as_ptr().add(offset) };
        // SAFETY: `start..start + block_size` is inside the mapping; user space owns this
        // block (TP_STATUS_USER was seen with Acquire) so the kernel does not write it
        // until `drop` hands it back, and the slice borrows `self`, so it ends first.
        unsafe { std::slice::from_raw_parts(start, self.ring.block_size) }
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        // Release: our reads of the block happen before the kernel may refill it
        // (packet_mmap.rst: "user space sets block_status to TP_STATUS_KERNEL").
        self.ring
            .status_word(self.index)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.ring.next = (self.index + 1) % self.ring.block_count;
    }
}

/// Offsets into a TPACKET_V3 block and its packet headers, from `libc`'s structs.
pub mod layout {
    use std::mem::{offset_of, size_of};

    /// `tpacket_block_desc.hdr.bh1.num_pkts`.
    pub const BLOCK_NUM_PKTS: usize =
        offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, num_pkts);
    /// `tpacket_block_desc.hdr.bh1.offset_to_first_pkt`.
    pub const BLOCK_FIRST_PKT: usize =
        offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);
    pub const PKT_NEXT_OFFSET: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
    pub const PKT_SEC: usize = offset_of!(libc::tpacket3_hdr, tp_sec);
    pub const PKT_NSEC: usize = offset_of!(libc::tpacket3_hdr, tp_nsec);
    pub const PKT_SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
    pub const PKT_LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
    pub const PKT_STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
    pub const PKT_MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
    pub const PKT_VLAN_TCI: usize =
        offset_of!(libc::tpacket3_hdr, hv1) + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci);
    pub const PKT_VLAN_TPID: usize =
        offset_of!(libc::tpacket3_hdr, hv1) + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid);
    /// The `sockaddr_ll` follows the header, 16-byte aligned (TPACKET_ALIGN).
    pub const PKT_SLL: usize = (size_of::<libc::tpacket3_hdr>() + 15) & !15;
    pub const SLL_PROTOCOL: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_protocol);
    pub const SLL_IFINDEX: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_ifindex);
    pub const SLL_HATYPE: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_hatype);
    pub const SLL_PKTTYPE: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_pkttype);
    pub const SLL_HALEN: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_halen);
    pub const SLL_ADDR: usize = PKT_SLL + offset_of!(libc::sockaddr_ll, sll_addr);
    /// Bytes from a packet's header through the end of its `sockaddr_ll`: always
    /// present before the packet data (which starts at `tp_mac`).
    pub const PKT_HEADER_SPAN: usize = PKT_SLL + size_of::<libc::sockaddr_ll>();
    /// The smallest frame size the kernel accepts for V3 (`TPACKET3_HDRLEN`).
    pub const TPACKET3_HDRLEN: usize = libc::TPACKET3_HDRLEN;
    pub const TP_STATUS_VLAN_VALID: u32 = libc::TP_STATUS_VLAN_VALID;
    pub const TP_STATUS_VLAN_TPID_VALID: u32 = libc::TP_STATUS_VLAN_TPID_VALID;
    pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;
    pub const ARPHRD_LOOPBACK: u16 = libc::ARPHRD_LOOPBACK;
    /// `sll_pkttype` of a packet this host sends.
    pub const PACKET_OUTGOING: u8 = libc::PACKET_OUTGOING;
}
