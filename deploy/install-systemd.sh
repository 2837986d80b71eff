#!/usr/bin/env bash
# Installs (or upgrades) neurolabel as a systemd service on Debian 12:
#   /opt/neurolabel/venv            the daemon in its own virtual environment
#   /opt/neurolabel/triton_models   the model repository the bundled Triton serves
#   /etc/neurolabel/                config.toml and neurolabel.env (kept on upgrade)
#   /etc/systemd/system/neurolabel.service, the `neurolabel` system user (systemd-sysusers)
#
#   sudo deploy/install-systemd.sh                 install on this machine, then: systemctl enable --now neurolabel
#   DESTDIR=/tmp/root deploy/install-systemd.sh    the same under a throwaway root (tests, inspection);
#                                                  nothing outside it is touched and systemctl is not called
#
# Environment: DESTDIR (empty), PREFIX (/opt/neurolabel), PYTHON (python3.11), EXTRAS ("server,postgres"),
# PACKAGE (what pip installs; default this checkout with EXTRAS, or e.g. a built wheel), PIP_OPTIONS (more
# pip options, e.g. "--no-index --find-links /media/wheels" on a machine without internet access).
# A virtual environment is not relocatable: one built under DESTDIR runs there, not after copying it to /.
set -euo pipefail

source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
destdir="${DESTDIR:-}"
destdir="${destdir%/}"
prefix="${PREFIX:-/opt/neurolabel}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
extras="${EXTRAS:-server,postgres}"
package="${PACKAGE:-$source_dir[$extras]}"
read -r -a pip_options <<< "${PIP_OPTIONS:-}"
service_user=neurolabel

say() { printf 'install-systemd: %s\n' "$*"; }
die() { printf 'install-systemd: %s\n' "$*" >&2; exit 1; }

[ -n "$destdir" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or set DESTDIR to install under a throwaway root)"
"$python" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
    || die "$python is not Python 3.11 or 3.12 (set PYTHON)"

# 1. The system user, from the sysusers.d file that also recreates it should /etc/passwd be restored.
install -D -m 0644 "$source_dir/deploy/systemd/neurolabel.sysusers" "$destdir/usr/lib/sysusers.d/neurolabel.conf"
if [ -n "$destdir" ]; then
    mkdir -p "$destdir/etc"
    systemd-sysusers --root="$destdir" neurolabel.conf
else
    systemd-sysusers neurolabel.conf
fi
group_id="$(awk -F: -v name="$service_user" '$1 == name { print $3 }' "$destdir/etc/group")"
[ -n "$group_id" ] || die "group $service_user was not created"
as_root=$([ "$(id -u)" -eq 0 ] && echo yes || echo no)

# 2. The daemon in its own virtual environment (an upgrade reinstalls into the same one).
venv="$destdir$prefix/venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check -q "${pip_options[@]}" --upgrade "$package"
[ -x "$venv/bin/neurolabel" ] || die "the neurolabel command was not installed into $venv"

# 3. Model repository, documented defaults and docs: replaced as a whole, so a removed model version goes.
rm -rf "$destdir$prefix/triton_models.new"
cp -a "$source_dir/triton_models" "$destdir$prefix/triton_models.new"
find "$destdir$prefix/triton_models.new" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$destdir$prefix/triton_models"
mv "$destdir$prefix/triton_models.new" "$destdir$prefix/triton_models"
install -D -m 0644 "$source_dir/config.toml" "$destdir$prefix/config.toml.example"
install -D -m 0644 "$source_dir/docs/deploy.md" "$destdir$prefix/docs/deploy.md"

# 4. Configuration: installed once, never overwritten (an upgrade leaves the site's files alone).
install -d -m 0755 "$destdir/etc/neurolabel"
for name in config.toml neurolabel.env; do
    target="$destdir/etc/neurolabel/$name"
    if [ -e "$target" ]; then
        say "kept existing /etc/neurolabel/$name (the shipped one is $prefix/${name}.dist)"
        install -m 0644 "$source_dir/deploy/systemd/$name" "$destdir$prefix/${name}.dist"
    else
        install -m 0640 "$source_dir/deploy/systemd/$name" "$target"
        [ "$as_root" = yes ] && chown "0:$group_id" "$target"
    fi
done
"$venv/bin/python" -c 'import sys; from daemon.config import load_config; load_config(sys.argv[1])' \
    "$destdir/etc/neurolabel/config.toml" || die "/etc/neurolabel/config.toml is not valid (see above)"

# 5. The unit.
install -D -m 0644 "$source_dir/deploy/systemd/neurolabel.service" "$destdir/etc/systemd/system/neurolabel.service"

if [ -z "$destdir" ]; then
    ldconfig -p | grep -q 'libpython3\.11\.so\.1\.0' || say "note: the bundled Triton needs Debian's libpython3.11 (apt-get install libpython3.11)"
    systemctl daemon-reload
    say "installed; start with: systemctl enable --now neurolabel   (status: neurolabel status, journalctl -u neurolabel)"
else
    say "installed under $destdir"
fi
