#!/usr/bin/env bash
# The whole test suite: system packages the integration tests need (installed with apt-get when
# root and missing), type check, lint, then vitest. Services are started by the tests themselves
# on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
# Standard XMPP clients for test/e2e/standard-clients.test.ts (profanity is driven through tmux).
[ -x /usr/bin/go-sendxmpp ] || need+=(go-sendxmpp)
[ -x /usr/bin/profanity ] || need+=(profanity)
[ -x /usr/bin/tmux ] || need+=(tmux)
# Third-party clients of the interop matrix (test/interop, docs/interop.md): libpurple (finch),
# loudmouth (mcabber), Net::XMPP (sendxmpp), slixmpp and nbxmpp (Debian's python3, GLib bindings).
[ -x /usr/bin/finch ] || need+=(finch)
[ -x /usr/bin/mcabber ] || need+=(mcabber)
[ -x /usr/bin/sendxmpp ] || need+=(sendxmpp)
[ -d /usr/lib/python3/dist-packages/slixmpp ] || need+=(python3-slixmpp)
[ -d /usr/lib/python3/dist-packages/nbxmpp ] || need+=(python3-nbxmpp)
[ -d /usr/lib/python3/dist-packages/gi ] || need+=(python3-gi)
# Headless Chromium for the browser tests (driven by playwright-core).
[ -x /usr/bin/chromium ] || need+=(chromium)
# OpenLDAP's slapd for the directory tests (test/helpers/slapd.ts starts its own on loopback).
[ -x /usr/sbin/slapd ] || need+=(slapd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing test dependencies: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing system packages for the tests: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi
echo "== typecheck"; npx tsc --noEmit -p .
echo "== lint"; npx eslint src test bench scripts
echo "== tests"; npx vitest run "$@"
