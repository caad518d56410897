#!/usr/bin/env bash
# Resolve through the admin API and the binary NexAPI endpoint side by side with a DNS A lookup
# against a local dnsmasq.
# Installs dnsmasq (Debian's dnsmasq-base: the binary, no system service) if it is missing, then
# runs the bench. Usage: bash fabric/benches/resolve_vs_dns.sh   (env: NEXUS_BENCH_SERVICES,
# NEXUS_BENCH_ROUNDS)
set -euo pipefail
if ! command -v dnsmasq >/dev/null 2>&1 && [ ! -x /usr/sbin/dnsmasq ]; then
  echo "installing dnsmasq-base" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q dnsmasq-base >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q dnsmasq-base >/dev/null
  }
fi
cd "$(dirname "$0")/../.."
exec cargo bench -p nexus-fabric --bench resolve_vs_dns
