# Shared by scripts/install_*.sh (sourced, not run): Debian packages for optional tests, never failing the caller.

# apt_ready TAG CONSEQUENCE: set $SUDO for apt-get and return 0, or say why packages cannot be installed and return 1.
apt_ready() {
  local tag=$1 consequence=$2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$tag: no apt-get on this machine; $consequence" >&2
    return 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "$tag: not root and no passwordless sudo; $consequence" >&2
      return 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
}

# apt_install TAG CONSEQUENCE PACKAGE...: update the index, install quietly (log in /tmp/TAG.log); 1 on failure.
apt_install() {
  local tag=$1 consequence=$2
  shift 2
  ( $SUDO apt-get update -qq || true ) >/dev/null 2>&1
  if $SUDO apt-get install -y -qq --no-install-recommends "$@" >"/tmp/$tag.log" 2>&1; then
    return 0
  fi
  echo "$tag: apt-get install failed (see /tmp/$tag.log); $consequence" >&2
  return 1
}
