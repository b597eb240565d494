# Sourced by scripts/test: Debian's chromium at /usr/bin/chromium for the browser test of the UI
# (atom_pipelines_tests/test_ui_browser.py drives it with Playwright's Python package). Installed from the
# machine's own Debian registry, never with `playwright install` (no browser downloads from elsewhere).
# An install that fails does not stop the suite: the browser test then fails under CI=true and skips
# loudly elsewhere, saying why.
if [ ! -x /usr/bin/chromium ]; then
  _atom_apt=(apt-get)
  if [ "$(id -u)" -ne 0 ]; then
    _atom_apt=(sudo -n apt-get)
  fi
  echo "scripts/_chromium.sh: /usr/bin/chromium missing; installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only when they do not know chromium (a fresh image ships without lists).
  if ! apt-cache show chromium >/dev/null 2>&1; then
    "${_atom_apt[@]}" update -qq >/dev/null || true
  fi
  if ! "${_atom_apt[@]}" install -y -qq --no-install-recommends chromium >/dev/null; then
    # Stale lists (a package version the mirror no longer has): refresh once and retry.
    "${_atom_apt[@]}" update -qq >/dev/null || true
    "${_atom_apt[@]}" install -y -qq --no-install-recommends chromium >/dev/null \
      || echo "scripts/_chromium.sh: WARNING: could not install chromium; the browser test will skip (fail under CI=true)" >&2
  fi
  unset _atom_apt
fi
