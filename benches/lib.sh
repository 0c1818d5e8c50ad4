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
