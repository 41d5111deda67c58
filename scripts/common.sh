#!/usr/bin/env bash
# Shared by scripts/test and scripts/run: messages, installs from Debian's packages, checks
# that a program really runs, and the build's own needs. Sourced, not run.

# Debian puts mosquitto in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in
  *:/usr/sbin:*) ;;
  *) export PATH="$PATH:/usr/sbin" ;;
esac

say() { printf '%s: %s\n' "scripts/$(basename "$0")" "$*" >&2; }
die() {
  say "$*"
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "not root and no sudo: run as root: $*"
  fi
}

# apt_install PACKAGE...: installs them; the package lists are updated once per run, and only
# when something is to be installed.
apt_updated=false
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install the Debian packages $* by hand"
  if ! $apt_updated; then
    say "apt-get update"
    as_root apt-get update -qq </dev/null
    apt_updated=true
  fi
  say "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# probe WHAT HINT TEXT COMMAND...: COMMAND runs and prints TEXT (a version line, say), so the
# program is really usable (its libraries load), not only on PATH; else fails with HINT.
probe() {
  local what=$1 hint=$2 text=$3 out
  shift 3
  out=$("$@" 2>&1 </dev/null) || true
  if ! grep -qF -- "$text" <<<"$out"; then
    die "$what does not work ($*: ${out:-no output}); install it: $hint"
  fi
  say "$what: $(grep -F -m1 -- "$text" <<<"$out")"
}

# --- Rust -------------------------------------------------------------------------------------
rust_toolchain() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust stable 1.89 or newer (rustup)"
  probe cargo "rustup toolchain install stable" "cargo " cargo --version
}

# --- The build: rdkafka builds librdkafka from source and links the system OpenSSL -------------
build_peers() {
  local missing=()
  type -P make >/dev/null || missing+=(make)
  type -P gcc >/dev/null || missing+=(gcc)
  type -P pkg-config >/dev/null || missing+=(pkg-config)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
  # OpenSSL's headers and libraries: a package, not a command.
  pkg-config --exists openssl || apt_install libssl-dev
  probe make "apt-get install -y make" "GNU Make" make --version
  probe gcc "apt-get install -y gcc" "gcc" gcc --version
  probe libssl-dev "apt-get install -y libssl-dev pkg-config" "openssl =" pkg-config --print-provides openssl
}
