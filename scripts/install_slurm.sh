#!/usr/bin/env bash
# Install what tests/test_slurm.py needs for a real single-node SLURM cluster on localhost:
# slurmctld, slurmd, the client tools, munge, slurmdbd and MariaDB (accounting, so submitit sees
# the states of jobs that die without a result). Debian/Ubuntu only; idempotent.
# Never fails the caller: where packages cannot be installed the SLURM tests skip with a reason.
set -u
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
SKIP="SLURM tests will be skipped"
. "$(dirname "$0")/apt_lib.sh"

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
apt_ready install_slurm "$SKIP" || exit 0
# Do not let package scripts start services (no systemd here; the test fixture starts daemons itself).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
  CLEAN_POLICY=1
fi
if apt_install install_slurm "$SKIP" $PKGS; then
  echo "install_slurm: installed $PKGS"
fi
if [ "${CLEAN_POLICY:-0}" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
exit 0
