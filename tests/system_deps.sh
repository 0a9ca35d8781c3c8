#!/usr/bin/env bash
# Installs the Debian packages the tests use (tests/system-packages.txt) when their commands are
# missing, so that `make test` passes on a fresh machine. Checks only, when everything is there.
set -euo pipefail
list="$(dirname "$0")/system-packages.txt"

missing=()
while read -r package commands; do
  case "$package" in '' | '#'*) continue ;; esac
  for command in $commands; do
    if ! command -v "$command" >/dev/null 2>&1; then
      missing+=("$package")
      break
    fi
  done
done <"$list"
[ ${#missing[@]} -eq 0 ] && exit 0

echo "system packages the tests need are missing: ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install ${missing[*]} (or your system's equivalents) by hand" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "not root and no sudo: as root, run apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}" >&2
