# Shared by the bench scripts (sourced, not run).
#
# render TEMPLATE NAME=VALUE...: prints TEMPLATE with every `@NAME@` replaced by VALUE.
#
# A report is markdown, full of backticks. Written as an unquoted heredoc, every unescaped
# backtick pair is a command substitution: `benches/docker-exec.sh` once ran `run`, `up` and
# itself from its own report and never ended. So every report is a quoted heredoc (`<<'EOT'`:
# nothing in it is expanded or run) with `@NAME@` placeholders, and the values are computed
# before it, in plain shell. `benches/check.sh` refuses unquoted heredocs with backticks.
render() {
  local text=$1 kv
  shift
  for kv in "$@"; do
    # Quoted replacement: `&` in a value stays `&` (bash 5.2's patsub_replacement).
    text=${text//"@${kv%%=*}@"/"${kv#*=}"}
  done
  if [[ $text =~ @[A-Z_]+@ ]]; then
    echo "render: no value for ${BASH_REMATCH[0]}" >&2
    return 1
  fi
  printf '%s\n' "$text"
}

# write_section OUT SECTION_FILE: puts the markdown section in SECTION_FILE (its first line is
# its "## " heading) into OUT (BENCHMARKS.md), replacing the section of the same heading, or at
# the end when there is none. Other sections are left as they are.
write_section() {
  python3 - "$1" "$2" <<'PY'
import pathlib, sys
out, section = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text()
heading = section.splitlines()[0]
text = out.read_text() if out.exists() else "# Benchmarks\n"
lines, kept, skipping, replaced = text.splitlines(keepends=True), [], False, False
for line in lines:
    if line.startswith("## "):
        if line.rstrip("\n") == heading:
            skipping, replaced = True, True
            kept.append(section + "\n")
            continue
        skipping = False
    if not skipping:
        kept.append(line)
text = "".join(kept)
if not replaced:
    text = text.rstrip("\n") + "\n\n" + section
out.write_text(text.rstrip("\n") + "\n")
PY
}
