# shellcheck shell=bash
# apt_need PKG:PROBE ...: install the Debian packages whose PROBE (a command on PATH, or an absolute path)
# is missing; quiet, idempotent, `apt-get update` only when the first try fails. Sourced by hack/*.sh.
apt_need() {
  local pair pkg probe need=()
  for pair in "$@"; do
    pkg=${pair%%:*} probe=${pair#*:}
    if [[ $probe == /* ]]; then [ -e "$probe" ] || need+=("$pkg"); else command -v "$probe" >/dev/null || need+=("$pkg"); fi
  done
  [ ${#need[@]} -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "apt: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
}
