#!/usr/bin/env bash
# Install soci-py on this machine (as root): a virtualenv with the pinned dependencies, the two commands linked
# into BINDIR, the systemd units (ExecStart pointing at BINDIR) and an example config that is never overwritten.
#
#   bash scripts/install.sh                      # /opt/soci-py, /usr/local/bin, /etc/systemd/system, /etc/...
#   PREFIX=... BINDIR=... UNITDIR=... CONFDIR=... bash scripts/install.sh
#
# Then: systemctl daemon-reload && systemctl enable --now soci-snapshotter.socket (see docs/kubernetes.md).
# Each directory is used in place (the virtualenv is not relocatable), so there is no DESTDIR.
# Python, fuse3 and what pyfuse3 builds with come from apt (containerd is the node's); SKIP_APT=1 skips that.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

PREFIX=${PREFIX:-/opt/soci-py}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/etc/systemd/system}
CONFDIR=${CONFDIR:-/etc/soci-snapshotter-grpc}
python=${PYTHON:-python3}

for dir in "$PREFIX" "$BINDIR" "$UNITDIR" "$CONFDIR"; do
  case "$dir" in
    /*) ;;
    *) echo "install: $dir is not an absolute path" >&2; exit 2 ;;
  esac
done

if [ "${SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in python3 python3-venv fuse3 python3-dev gcc pkg-config libfuse3-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

# A new virtualenv beside the old one, swapped in at the end: a failed install leaves the old one working.
mkdir -p "$(dirname "$PREFIX")"
staging="$PREFIX.new.$$"
trap 'rm -rf "$staging"' EXIT
"$python" -m venv "$staging"
# the package's own dependencies only, at the versions CI tested (the lock also pins the development tools)
"$staging/bin/pip" install -q --disable-pip-version-check -c "$repo/requirements.lock" "$repo"
# the scripts' shebangs name the staging directory; they must name PREFIX
for script in "$staging"/bin/*; do
  if [ -f "$script" ] && [ ! -L "$script" ] && head -c 2 "$script" | grep -q '#!'; then
    sed -i "1s|^#!$staging/|#!$PREFIX/|" "$script"
  fi
done
sed -i "s|$staging|$PREFIX|g" "$staging/pyvenv.cfg" "$staging/bin/activate"
if [ -e "$PREFIX" ]; then
  rm -rf "$PREFIX.old"
  mv "$PREFIX" "$PREFIX.old"
fi
mv "$staging" "$PREFIX"
rm -rf "$PREFIX.old"
trap - EXIT

install -d -m 0755 "$BINDIR" "$UNITDIR"
ln -sfn "$PREFIX/bin/soci" "$BINDIR/soci"
ln -sfn "$PREFIX/bin/soci-snapshotter-grpc" "$BINDIR/soci-snapshotter-grpc"

for unit in soci-snapshotter.service soci-snapshotter.socket; do
  sed "s|/usr/local/bin/soci-snapshotter-grpc|$BINDIR/soci-snapshotter-grpc|g" \
    "$repo/packaging/systemd/$unit" > "$UNITDIR/.$unit.tmp"
  chmod 0644 "$UNITDIR/.$unit.tmp"
  mv "$UNITDIR/.$unit.tmp" "$UNITDIR/$unit"
done

install -d -m 0755 "$CONFDIR"
if [ -e "$CONFDIR/config.toml" ]; then
  echo "install: kept $CONFDIR/config.toml (the example is $PREFIX/share/soci-py/config.toml)"
else
  install -m 0644 "$repo/packaging/config.toml" "$CONFDIR/config.toml"
fi
install -d -m 0755 "$PREFIX/share/soci-py"
install -m 0644 "$repo/packaging/config.toml" "$PREFIX/share/soci-py/config.toml"
echo "install: soci and soci-snapshotter-grpc in $BINDIR, units in $UNITDIR, config in $CONFDIR"
