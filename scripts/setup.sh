#!/usr/bin/env bash
# Installs what `make` needs and a fresh Debian machine lacks, only when missing, without
# prompting. Run by `make setup` (and so by `make test` and `make testnet`).
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            say "need root (or sudo) to install: $*"
            exit 1
        fi
    fi
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust with rustup (https://rustup.rs) and re-run"
    exit 1
fi

missing=()
# rocksdb's bindgen loads libclang at run time.
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null &&
   ! compgen -G '/usr/lib/*-linux-gnu/libclang-[0-9]*.so*' >/dev/null; then
    missing+=(libclang-dev)
fi
# The C++ side of rocksdb.
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# The metrics test runs a real Prometheus against the testnet's nodes.
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
# The partition test puts each validator in its own network namespace with `ip`.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# The power-loss tests mount a FUSE filesystem (tests/src/lazyfs.rs) as root, without
# libfuse or fusermount: they need the kernel's /dev/fuse.
if [ ! -c /dev/fuse ]; then
    if [ "$(id -u)" -eq 0 ] && command -v modprobe >/dev/null 2>&1; then
        modprobe fuse 2>/dev/null || true
    fi
    if [ ! -c /dev/fuse ]; then
        say "warning: /dev/fuse is missing; the power-loss tests (tests/tests/power_loss.rs) will fail"
    fi
fi

# rustfmt and clippy come with rustup's default profile; add them if this toolchain lacks them.
for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "adding rustup component $comp"
        rustup component add "$comp"
    fi
done
