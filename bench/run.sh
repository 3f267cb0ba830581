#!/usr/bin/env bash
# Runs voxperf's benchmarks: every part, or only the parts named on the command line.
#
#   bench/run.sh                 run every part, in name order
#   bench/run.sh overhead        run only the part `overhead`
#   bench/run.sh --list          list the parts
#
# A part is a directory bench/<name>/ holding an entry point `run.sh` (run with bash) or `run.py`
# (run with python3). Adding a part means adding such a directory: nothing here names the parts.
# Each part prints its own tables and writes its report to bench/results/<name>.md; its knobs are
# environment variables documented in bench/README.md. A failing part does not stop the others;
# the exit status says whether all of them passed.
set -euo pipefail

bench_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# The parts are run from the work tree: no byte-code caches next to the sources.
export PYTHONDONTWRITEBYTECODE=1

usage() {
    cat <<EOF
usage: bench/run.sh [--list | -h | --help] [PART ...]

Runs the named benchmark parts (all of them when none is named).
Parts: ${parts[*]:-(none)}
See bench/README.md for what each part measures and the environment variables it reads.
EOF
}

# The entry point of part $1, or nothing when $1 is not a part.
entry_point() {
    local dir=$bench_dir/$1
    if [[ -f $dir/run.sh ]]; then
        printf '%s\n' "$dir/run.sh"
    elif [[ -f $dir/run.py ]]; then
        printf '%s\n' "$dir/run.py"
    fi
}

parts=()
for dir in "$bench_dir"/*/; do
    name=$(basename -- "$dir")
    if [[ -n $(entry_point "$name") ]]; then
        parts+=("$name")
    fi
done

selected=()
for arg in "$@"; do
    case $arg in
        -h | --help)
            usage
            exit 0
            ;;
        --list)
            printf '%s\n' "${parts[@]}"
            exit 0
            ;;
        -*)
            echo "bench/run.sh: unknown option '$arg'" >&2
            usage >&2
            exit 2
            ;;
        *)
            if [[ -z $(entry_point "$arg") ]]; then
                echo "bench/run.sh: no benchmark part named '$arg' (parts: ${parts[*]:-none})" >&2
                exit 2
            fi
            selected+=("$arg")
            ;;
    esac
done
if ((${#selected[@]} == 0)); then
    selected=("${parts[@]}")
fi
if ((${#selected[@]} == 0)); then
    echo "bench/run.sh: no benchmark parts found under $bench_dir" >&2
    exit 2
fi

failed=()
for part in "${selected[@]}"; do
    entry=$(entry_point "$part")
    echo "=== bench: $part ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) ==="
    started=$SECONDS
    status=0
    case $entry in
        *.sh) bash "$entry" || status=$? ;;
        *.py)
            if ! command -v python3 >/dev/null; then
                echo "bench/run.sh: part '$part' needs python3, which is not on PATH" >&2
                status=127
            else
                python3 "$entry" || status=$?
            fi
            ;;
    esac
    elapsed=$((SECONDS - started))
    took="$((elapsed / 60)) min $((elapsed % 60)) s"
    if ((status == 0)); then
        echo "=== bench: $part done in $took ==="
    else
        echo "=== bench: $part FAILED (exit $status) after $took ===" >&2
        failed+=("$part")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "bench/run.sh: failed parts: ${failed[*]}" >&2
    exit 1
fi
