#!/bin/bash
# Builds the Debian package netwatch_VERSION_ARCH.deb (issue 14) with dpkg-deb:
#   scripts/package.sh [--binary PATH] [--out DIR]
# --binary PATH  package this netwatch binary as built (the tests pass target/debug/netwatch);
#                without it: cargo build --release --locked and target/release/netwatch
# --out DIR      where the .deb goes (default target/package)
# The package holds the stripped binary (/usr/bin/netwatch), the agent's unit
# (/lib/systemd/system/netwatch-agent.service, installed disabled), its default
# config (/etc/netwatch/agent.toml, a conffile) and the --help text under
# /usr/share/doc/netwatch. Its scripts make the system user netwatch-agent the unit
# runs as; a purge removes it, /etc/netwatch and /var/lib/netwatch.
# Checked end to end by crates/netwatch/tests/package.rs. Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

usage() { echo "usage: scripts/package.sh [--binary PATH] [--out DIR]" >&2; exit 2; }
binary='' out=target/package
while [ $# -gt 0 ]; do
  case $1 in
    --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "scripts/package.sh: unknown argument $1" >&2; usage ;;
  esac
done
for tool in dpkg-deb:dpkg objcopy:binutils gzip:gzip; do
  command -v "${tool%%:*}" >/dev/null ||
    { echo "scripts/package.sh: ${tool%%:*} is missing: apt-get install -y ${tool#*:}" >&2; exit 1; }
done
if [ -z "$binary" ]; then
  cargo build --release --locked -p netwatch --bin netwatch >&2
  binary=target/release/netwatch
fi
[ -x "$binary" ] || { echo "scripts/package.sh: $binary is not an executable" >&2; exit 1; }

# `netwatch 0.1.0` → 0.1.0
version=$("$binary" --version | awk '$1 == "netwatch" { print $2 }')
[ -n "$version" ] || { echo "scripts/package.sh: no version in \`$binary --version\`" >&2; exit 1; }
arch=$(dpkg --print-architecture)
unit_src=packaging/netwatch-agent.service
grep -q /usr/local/bin/netwatch "$unit_src" ||
  { echo "scripts/package.sh: $unit_src has no /usr/local/bin/netwatch to point at /usr/bin/netwatch" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
mkdir -p "$stage"/DEBIAN "$stage"/usr/bin "$stage"/lib/systemd/system "$stage"/etc/netwatch \
  "$stage"/usr/share/doc/netwatch

# The binary, stripped (the symbols stay in the build tree).
objcopy --strip-all "$binary" "$stage/usr/bin/netwatch"
chmod 0755 "$stage/usr/bin/netwatch"
nw=$stage/usr/bin/netwatch

# The unit: the binary is where the package puts it (every line that names it).
sed 's|/usr/local/bin/netwatch|/usr/bin/netwatch|g' "$unit_src" >"$stage/lib/systemd/system/netwatch-agent.service"
chmod 0644 "$stage/lib/systemd/system/netwatch-agent.service"

# The default config: only the keys `netwatch agent --config` takes (it refuses any other).
cat >"$stage/etc/netwatch/agent.toml" <<'EOF'
# netwatch agent settings, read by the netwatch-agent service
# (`netwatch agent --config /etc/netwatch/agent.toml`; `netwatch agent --help`
# lists them: a flag given on the command line overrides the file).
# Set `server` and `enroll_token` (and `ca` for a private CA), then:
#   systemctl enable --now netwatch-agent

# The controller's URL.
#server = "https://controller.example:8443"

# The enrollment token the controller's operator gave out (`netwatch vm extension
# set` prints it). Used once: the agent keeps the credential it receives in
# data_dir/credential and connects with that from then on.
#enroll_token = "..."

# A CA certificate (PEM) to trust for the controller, e.g. the ca.pem that
# `netwatch up` made; the system's trusted roots when not set. The agent runs as
# the user netwatch-agent, which must be able to read it.
#ca = "/etc/netwatch/ca.pem"

# The VM name this host registers as (letters, digits, _ - .); default: the host name.
#vm_name = "web-01"

# The resource group and the location (region) the VM is in; the location must
# be one the controller serves.
#resource_group = "netwatch"
#location = "westus"

# Where captures are written before upload, with the agent's credential and
# host id. The service's StateDirectory: keep it as is when run by systemd.
data_dir = "/var/lib/netwatch/agent"

# The interface to capture on; `any` captures on all of them.
interface = "any"

# Cap, in MiB, of the capture files waiting for upload in data_dir/spool; new
# captures are refused while it is full.
#spool_max_mib = 1024

# Tags of this host: its VM's tags when it first registers; captures may choose
# hosts by tag.
#[tags]
#role = "web"
#env = "prod"
EOF
chmod 0640 "$stage/etc/netwatch/agent.toml"

# Documentation: copyright, changelog, and the --help text of the commands a host uses.
doc=$stage/usr/share/doc/netwatch
cat >"$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: netwatch
Source: https://github.com/netwatch/netwatch

Files: *
Copyright: netwatch developers
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations under
 the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
EOF
cat <<EOF | gzip -9n >"$doc/changelog.Debian.gz"
netwatch ($version) unstable; urgency=medium

  * Package built by scripts/package.sh from the netwatch repository.

 -- netwatch developers <netwatch@localhost>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")
EOF
{
  for cmd in "" agent capture; do
    echo "\$ netwatch${cmd:+ $cmd} --help"
    # shellcheck disable=SC2086 # $cmd is one word or none
    "$nw" $cmd --help
    echo
  done
} >"$doc/netwatch-help.txt"
chmod 0644 "$doc"/*

# Package metadata and maintainer scripts.
echo /etc/netwatch/agent.toml >"$stage/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: netwatch
Version: $version
Architecture: $arch
Maintainer: netwatch developers <netwatch@localhost>
Installed-Size: $installed_size
Section: net
Priority: optional
Homepage: https://github.com/netwatch/netwatch
Description: remote packet capture for fleets of Linux hosts
 netwatch captures packets on many Linux hosts at once, driven through an
 API compatible with Azure Network Watcher's packet captures, so the az CLI,
 Azure's SDKs and the netwatch client commands work with it unchanged.
 .
 One binary holds every role: the controller (netwatch server), the agent
 each host runs (netwatch agent; this package installs its systemd unit
 netwatch-agent.service, disabled, and its config /etc/netwatch/agent.toml),
 a local tcpdump-like capture with Azure's filters (netwatch capture), and
 the az-shaped client commands.
EOF

cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# netwatch: the agent's system user, and its config readable by it. The unit
# stays disabled: it needs the controller's address and a token first.
set -e
if [ "$1" = configure ]; then
  if ! getent passwd netwatch-agent >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /var/lib/netwatch \
      --shell /usr/sbin/nologin netwatch-agent
  fi
  if [ -f /etc/netwatch/agent.toml ]; then
    chgrp netwatch-agent /etc/netwatch/agent.toml
    chmod 0640 /etc/netwatch/agent.toml
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
  echo "netwatch: the agent's service is not enabled: set server and enroll_token in /etc/netwatch/agent.toml, then run: systemctl enable --now netwatch-agent"
fi
exit 0
EOF

cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# netwatch: the agent's service stops before its binary goes.
set -e
case "$1" in
  remove | deconfigure)
    if [ -d /run/systemd/system ]; then
      systemctl stop netwatch-agent.service || true
    fi
    ;;
esac
exit 0
EOF

cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# netwatch: a purge removes what the package made besides its files: the
# agent's user and group, its data (/var/lib/netwatch), /etc/netwatch (dpkg has
# removed the conffile; a file an administrator added there stays) and the
# service's enablement.
set -e
case "$1" in
  remove)
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload || true
    fi
    ;;
  purge)
    rm -f /etc/systemd/system/multi-user.target.wants/netwatch-agent.service
    rm -rf /var/lib/netwatch
    rm -f /etc/netwatch/agent.toml /etc/netwatch/agent.toml.dpkg-*
    if [ -d /etc/netwatch ]; then
      rmdir --ignore-fail-on-non-empty /etc/netwatch
    fi
    if getent passwd netwatch-agent >/dev/null; then
      userdel netwatch-agent
    fi
    if getent group netwatch-agent >/dev/null; then
      groupdel netwatch-agent
    fi
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload || true
    fi
    ;;
esac
exit 0
EOF
chmod 0755 "$stage"/DEBIAN/postinst "$stage"/DEBIAN/prerm "$stage"/DEBIAN/postrm
chmod 0644 "$stage"/DEBIAN/control "$stage"/DEBIAN/conffiles

mkdir -p "$out"
deb=$out/netwatch_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$stage" "$deb" >&2
echo "$deb"
