# Sourced by the scripts: makes sure the Debian packages crew needs are there.
# As root it installs what is missing; otherwise it prints the apt-get line.
crew_require_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "crew: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
      echo "crew: apt-get install failed" >&2; return 1; }
  else
    echo "crew: missing packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
}

# Jobs for the build: all cores, at least 1.
crew_jobs() { nproc 2>/dev/null || echo 2; }
