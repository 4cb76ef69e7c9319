# Shared by the bench/*.sh scripts (source it): the machine line every table starts with,
# and the replacement of a marked section of a Markdown file by a table.

# "Machine: MODEL NAME, N cores, YYYY-MM-DD." from lscpu and the date of the run.
machine_line() {
  local model cores
  model=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
  cores=$(nproc --all)
  echo "Machine: ${model:-unknown CPU}, $cores cores, $(date -u +%Y-%m-%d)."
}

# Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in FILE with the
# contents of TABLE; fails, naming the marker, when FILE lacks it.
write_section() { # NAME FILE TABLE
  python3 - "$1" "$2" "$3" <<'PY'
import sys
name, path, table = sys.argv[1:]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
doc = open(path, encoding="utf-8").read()
if doc.count(begin) != 1 or doc.count(end) != 1 or doc.index(begin) > doc.index(end):
    sys.exit(f"error: {path} needs one '{begin}' ... '{end}' section")
head, rest = doc.split(begin)
tail = rest.split(end)[1]
body = open(table, encoding="utf-8").read().strip()
open(path, "w", encoding="utf-8").write(f"{head}{begin}\n{body}\n{end}{tail}")
PY
}

# Writes TABLE to stdout and, when WRITE names a Markdown file, into its NAME section.
publish() { # NAME TABLE
  cat "$2"
  if [[ -n "${WRITE:-}" ]]; then
    write_section "$1" "$WRITE" "$2"
  fi
}

# The rerunnable scripts' arguments after their input: OUT [--force]. Sets `out`, `force`
# (nothing or --force; `step` and `step_stdout` read it) and `whittle` (env WHITTLE, default
# target/release/whittle).
read_run_args() { # OUT [--force]
  out="$1"
  force="${2:-}"
  if [[ -n "$force" && "$force" != --force ]]; then
    echo "error: third argument '$force': expected --force" >&2 && exit 2
  fi
  whittle="${WHITTLE:-target/release/whittle}"
}

# Succeeds (saying so) when OUTPUT exists and there is no --force: its step is done.
already_done() { # OUTPUT
  if [[ -s "$1" && "${force:-}" != --force ]]; then
    echo "skip: $1 exists" >&2
    return 0
  fi
  return 1
}

# Runs the command after OUTPUT unless it is already done, logging its stderr to
# OUTPUT.log; the command writes OUTPUT itself.
step() { # OUTPUT COMMAND...
  local target="$1"
  shift
  already_done "$target" && return
  echo "run: $*" >&2
  "$@" 2>"$target.log"
}

# Like step, for a command whose stdout is OUTPUT (written whole, or not at all).
step_stdout() { # OUTPUT COMMAND...
  local target="$1"
  shift
  already_done "$target" && return
  echo "run: $*" >&2
  "$@" >"$target.part" 2>"$target.log" || return
  mv "$target.part" "$target"
}
