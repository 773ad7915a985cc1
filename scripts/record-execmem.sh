#!/bin/sh
# record-execmem.sh: run record-execmem.bt with only the probes this kernel has.
#
# Why a wrapper: the functions the script probes come and go with kernel versions (execmem_alloc
# since 6.10, module_memory_alloc 6.4+ and static, so it may be inlined, module_memfree up to
# 6.9, ...; docs/TRACES.md), and bpftrace refuses a program with a probe it cannot attach or a
# struct field the kernel lacks. Each "//@probe NAME" ... "//@end" block of record-execmem.bt is
# kept when /proc/kallsyms has a function called exactly NAME (a ".isra"/".constprop" copy has
# another calling convention and is not probed).
#
#   sudo scripts/record-execmem.sh > rec.txt            record until Ctrl-C
#   sudo scripts/record-execmem.sh -c 'modprobe xfs'   extra arguments go to bpftrace
#   scripts/record-execmem.sh --print                   print the program it would run
#
# Environment: KALLSYMS (default /proc/kallsyms), BPFTRACE (default bpftrace).
set -eu

here=$(dirname "$0")
bt="$here/record-execmem.bt"
kallsyms=${KALLSYMS:-/proc/kallsyms}
print=0
if [ "${1:-}" = "--print" ]; then
	print=1
	shift
fi
[ -r "$bt" ] || { echo "record-execmem.sh: cannot read $bt" >&2; exit 1; }
[ -r "$kallsyms" ] || { echo "record-execmem.sh: cannot read $kallsyms" >&2; exit 1; }

prog=$(awk -v kallsyms="$kallsyms" '
	BEGIN {
		while ((getline line < kallsyms) > 0) {
			n = split(line, f, " ")
			if (n >= 3 && f[2] ~ /^[TtWw]$/) have[f[3]] = 1
		}
		keep = 1
	}
	/^\/\/@probe / {
		name = $2
		keep = (name in have)
		if (keep) kept = kept " " name; else dropped = dropped " " name
		next
	}
	/^\/\/@end/ { keep = 1; next }
	keep { print }
	END {
		printf "record-execmem.sh: probes:%s\n", (kept == "" ? " none" : kept) > "/dev/stderr"
		if (dropped != "") printf "record-execmem.sh: not in this kernel:%s\n", dropped > "/dev/stderr"
		if (kept == "") exit 3
	}
' "$bt") || {
	echo "record-execmem.sh: none of the probed functions is in $kallsyms (a kernel before 5.18?)" >&2
	exit 1
}

if [ "$print" = 1 ]; then
	printf '%s\n' "$prog"
	exit 0
fi
printf '%s\n' "$prog" | exec "${BPFTRACE:-bpftrace}" "$@" -
