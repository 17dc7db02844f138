#!/usr/bin/env bash
# Install what tests/test_slurm.py needs for a real single-node SLURM cluster on localhost:
# slurmctld, slurmd, the client tools, munge, slurmdbd and MariaDB (accounting, so submitit sees
# the states of jobs that die without a result). Debian/Ubuntu only; idempotent.
# Never fails the caller: where packages cannot be installed the SLURM tests skip with a reason.
set -u
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"

have_all() {
  for b in slurmctld slurmd sbatch munged slurmdbd; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 1
  done
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ] || return 1
}

if have_all; then
  echo "install_slurm: slurm, munge, slurmdbd and mariadb already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_slurm: no apt-get on this machine; SLURM tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_slurm: not root and no passwordless sudo; SLURM tests will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Do not let package scripts start services (no systemd here; the test fixture starts daemons itself).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
  CLEAN_POLICY=1
fi
( $SUDO apt-get update -qq || true ) >/dev/null 2>&1
if $SUDO apt-get install -y -qq --no-install-recommends $PKGS >/tmp/install_slurm.log 2>&1; then
  echo "install_slurm: installed $PKGS"
else
  echo "install_slurm: apt-get install failed (see /tmp/install_slurm.log); SLURM tests will be skipped" >&2
fi
if [ "${CLEAN_POLICY:-0}" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
exit 0
