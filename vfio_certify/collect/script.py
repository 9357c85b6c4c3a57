"""Render the collection spec into one POSIX shell script.

The script only reads the host. It builds the snapshot in a private temporary folder
(removed on exit): in $TMPDIR when the user set one, else in /dev/shm, memory, where the
host has one with 64 MiB free (nothing is written to its disks), else in /tmp. Then it
prints the snapshot as base64 of a .tar.gz between two marker lines, so that whatever a
login shell prints around it is ignored; run as `sh collect.sh FILE` it writes the
.tar.gz bundle to FILE instead. It runs unchanged under dash, bash and busybox sh: no
bashisms, only cat, ln, ls, mkdir, rm, tar, gzip, uname, base64 (not for FILE), and
`mktemp`, `stat`, `sleep` and `date` when the host has them; GNU tar's --transform makes
the links where tar is GNU tar (vc_links), ln elsewhere. A missing tool stops it first,
exit status 69 and one line naming it; a private folder whose file system filled up
(files cut short) sends nothing, exit status 75 and one line naming the folder. Nothing
is left on the host: the folder is removed on exit, also on a signal or a hang-up
(SIGPIPE).

The commands run side by side, as background jobs, while the files are read (most of the
script's time is theirs, mostly waiting): each writes only its own files (output, `.rc`,
`.err`), so what is stored is what running them one by one stores. A command that would
see the others (`ps`, spec.Command.alone) runs first, alone; one whose output names what
other commands run for (`virsh list --all --name` for `virsh dumpxml`) runs before them in
the same job. On exit the jobs still running are stopped before the folder is removed.

Each command is bounded (`command_timeout_s`, 30 s) by one watchdog per batch of commands run side by side (a
subshell and its `sleep`), not a `timeout` process per command: past the bound it stops those still running,
and each of them gets exit status 124 in its `.rc`, as `timeout` gives (a job stops its running command and
writes its 124 itself; the commands it had not started yet are not run). A host without `sleep` runs them
unbounded, as one without `timeout` did (the whole script is still bounded, runner._BOUNDED).

The snapshot's meta.json is written by the script too, so every bundle has one (also
those made without vfio-certify on the controller): the format, `"absence":
"parent-folder"` (the script makes the parent folder of every path it probes, see
`vc_folder`, `vc_copy`, `vc_mark`, `vc_link`, `vc_attrs`), `collected_at` from the
host's clock, and hostname and kernel release only when they are made of characters that
need no JSON escaping (otherwise readers fall back to commands/uname_-n and uname_-r).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

from ..snapshot.reader import ABSENCE_PARENT_FOLDER, FORMAT
from . import spec

BEGIN_MARK = "--- vfio-certify snapshot begin ---"
END_MARK = "--- vfio-certify snapshot end ---"
COMMAND_TIMEOUT_S = 30
MISSING_TOOL_STATUS = 69  # EX_UNAVAILABLE: stderr's last line names the tool
NO_SPACE_STATUS = 75  # EX_TEMPFAIL: the private folder's file system filled up; stderr's last line names it
DROPBEAR_MAX_COMMAND = 9000  # Dropbear's MAX_CMD_LEN: a longer remote command closes the connection

_PRELUDE = r"""
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
@ABBREVIATIONS@
umask 077
NL="
"
_need="cat ln ls mkdir rm tar gzip uname"; [ -n "${1:-}" ] || _need="$_need base64"
for _t in $_need; do
  command -v "$_t" >/dev/null 2>&1 || { echo "$_t not found on the host" >&2; exit @MISSING@; }
done
# The private folder: in $TMPDIR when the user set one, else in memory (/dev/shm, a tmpfs on every Linux that has
# it: nothing is written to the host's disks, and a full or read-only disk does not stop the collection) when it has
# 16384 free blocks (64 MiB with 4 KiB pages: a big host's snapshot is a few MiB), else /tmp. (Should the folder's
# file system fill up all the same, the script says so at its end, exit status 75, instead of sending what it cut.)
# Without mktemp: a fresh folder in $TMPDIR or /tmp, or nothing (plain mkdir fails on anything planted there, links too).
T=$({ [ -z "${TMPDIR:-}" ] && [ "$(stat -f -c %a /dev/shm 2>&1)" -gt 16383 ] && mktemp -dp /dev/shm; } 2>/dev/null ||
  mktemp -d 2>/dev/null) || { T=${TMPDIR:-/tmp}/vfio-certify.$$
  mkdir -m 700 "$T" 2>/dev/null ||
  { echo "cannot create the private folder $T" >&2; exit 70; }; }
_ps=; _st=; _js=; _k=0
# The background commands' shells and the watchdog are stopped (and waited for, so that none writes after the rm)
# first; IFS as a stop may find it (newline only, in vc_md and vc_links) would make of _ps one word and no kill.
trap "IFS=\" \"; : > \"\$T/s\$_k\"; kill \$_ps 2>/dev/null; wait; rm -rf \"\$T\"" EXIT
trap "exit 130" INT TERM HUP
trap "exit 141" PIPE
R=$T/root
C=$T/commands
mkdir -p "$R" "$C"
vc_bad() { rm -f "$R$1"; echo "unreadable: $1" >> "$T/notes"; }
vc_cat() { cat "$1" > "$R$1" 2>/dev/null || vc_bad "$1"; }
# Many folders in one mkdir: the newline-separated list is split on newlines only, never globbed (and no
# subshell is forked for it: IFS and globbing are put back after).
vc_md() { [ -z "$1" ] || { IFS=$NL; set -f; mkdir -p -- $1; IFS=$_IFS; set +f; }; }
_IFS=$IFS
# The sources are read in two passes ($_P): the first lists in $_D the folders they need, made by one mkdir, the
# second reads them. Processes are the script's cost: one mkdir for every folder, one ls for every link.
vc_folder() { [ $_P = 2 ] || for d; do _D="$_D$NL$R$d"; done; }
vc_copy() {
  for f; do
    [ -f "$f" ] || continue
    if [ $_P = 1 ]; then _D="$_D$NL$R${f%/*}"; else vc_cat "$f"; fi
  done
}
vc_mark() {
  for f; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    if [ $_P = 1 ]; then _D="$_D$NL$R${f%/*}"; [ ! -d "$f" ] || _D="$_D$NL$R$f"
    elif [ ! -d "$f" ]; then : > "$R$f"; fi
  done
}
# vc_links PREFIX GLOB ...: each link a GLOB matches, recorded as its PREFIX and the target's last component; one
# ls lists them all (the first pass), and a link's GLOB, matched as a case pattern, says its PREFIX. It is called
# with globbing off (set -f), so that the GLOBs come in as they are.
# A process per link is the script's largest cost on a real server (one `ln` each: a driver and a group link for
# every PCI function, 50 to 80 on the hosts of fixtures/hosts, hundreds with SR-IOV), so where tar is GNU tar ($_gt)
# the links a GLOB matched are listed in $T/L<its number> and copied by one tar per GLOB, which writes each
# target as PREFIX and its last component (--transform, on link targets only: flags sRH), into one tar that
# makes them: a few processes, whatever the number of links. The links are the same either way; if that tar
# fails, ln makes them all (-f: over what it made, and over the empty files GNU tar stands in for a link until
# its end, when a link points up with '..').
vc_links() {
  [ $_P = 2 ] || { _g=; for g; do case $g in /*) _g="$_g $g" ;; esac; done; set +f; _l=$(ls -ld -- $_g 2>/dev/null)
    _gt=; [ -z "$_l" ] || case $(tar --version 2>/dev/null) in *GNU*) _gt=1 ;; esac; }
  IFS=$NL; set -f
  for l in $_l; do
    case $l in *" -> "*) ;; *) continue ;; esac
    f=${l% -> *}; f=/${f#* /}; t=${l##* -> }
    [ $_P = 2 ] || { _D="$_D$NL$R${f%/*}"; continue; }
    _q=; _i=0; for g; do case $g in /*) _i=$((_i+1)); case $f in $g) _q=$_p; break ;; esac ;; *) _p=$g ;; esac; done
    [ -z "$_q" ] || if [ "$_gt" ]; then printf %s\\n "${f#/}" >> "$T/L$_i"; else ln -sf "$_q${t##*/}" "$R$f"; fi
  done
  IFS=$_IFS; set +f
  [ $_P = 1 ] || [ -z "$_gt" ] || { _i=0; for g; do case $g in /*) _i=$((_i+1)); [ ! -f "$T/L$_i" ] ||
    tar -C / -cf - --no-recursion "--transform=s,^\(.*/\)*,$_p,sRH" -T "$T/L$_i" ;; *) _p=$g ;; esac
    done | tar -C "$R" -xif -; } 2>/dev/null || { _gt=; vc_links "$@"; } 2>/dev/null
}
# vc_attrs NAMES TEXT-NAMES FOLDER...: kernel-formatted values kept byte for byte by builtins when a file is one
# line, else by cat; the strings a device supplies (TEXT-NAMES: they may hold anything, a NUL too) by cat. _r stays
# empty when the file cannot be opened; an empty file and a read error (EIO) both read nothing (sysfs says 4096
# for the size of each): cat's exit status tells them apart.
vc_attrs() {
  _a=$1; _t=$2; shift 2
  for d; do
    [ -e "$d" ] || continue
    [ $_P = 2 ] || { _D="$_D$NL$R$d"; continue; }
    for a in $_a; do
      [ -f "$d/$a" ] || continue
      v=; w=; _r=
      { IFS= read -r v; _r=$?; IFS= read -r w; _r=$_r$?; } 2>/dev/null < "$d/$a"
      case $_r$w in
        01) printf "%s\n" "$v" > "$R$d/$a" ;;
        11) if [ -n "$v" ]; then printf %s "$v" > "$R$d/$a"; else vc_cat "$d/$a"; fi ;;
        "") vc_bad "$d/$a" ;;
        *) vc_cat "$d/$a" ;;
      esac
    done
    for a in $_t; do [ ! -f "$d/$a" ] || vc_cat "$d/$a"; done
  done
  return 0
}
# vc_each MAX NAMES-FILE CMD...: CMD NAME for each line of the stored NAMES-FILE, safe names only, at most MAX.
vc_each() {
  _x=$1; _f=$C/$2; shift 2
  [ -f "$_f" ] || return 0
  while IFS= read -r _d; do
    case $_d in ""|*[!A-Za-z0-9._+-]*) continue ;; esac
    _x=$((_x-1)); [ $_x -ge 0 ] || break
    vc_run "$@" "$_d"
  done < "$_f"
}
# vc_open NAME MAX FOLDER GLOB...: if a GLOB matched, `PID FD TARGET COMM` per open file under FOLDER (at most MAX;
# a process in a chroot shows its root's path before FOLDER). ls lists every /proc/<pid>/fd alone, bounded as a
# command is; its exit status and stderr are the scan's.
vc_open() {
  _n=$1; _x=$2; _f=$3; shift 3; _g=
  for g; do [ -e "$g" ] && _g=1; done
  [ "$_g" ] || return 0
  ls -l /proc/[0-9]*/fd > "$T/fd" 2> "$C/$_n.err" & _ps=$!; _st="$!:$_n"; vc_watch; vc_wait
  while IFS= read -r l; do case $l in /proc/*/fd:) p=${l#/proc/}; p=${p%/fd:};;
    *" -> "*"$_f/"*) _x=$((_x-1)); [ $_x -lt 0 ] && continue; d=${l% -> *}; c=
      { IFS= read -r c; } 2>/dev/null <"/proc/$p/comm"; printf %s\\n "$p ${d##* } ${l##* -> } $c";;
  esac; done < "$T/fd" >"$C/$_n"
}
# A command's files are named after it, its words joined by _ ("$*" joins them with IFS's first character); $_b
# is the program as PATH finds it, as `timeout` looked it up (a shell of busybox may prefer its own applet).
vc_name() { IFS=_; n="$*"; IFS=:; _b=$1; for d in $PATH; do [ -f "$d/$1" ] && [ -x "$d/$1" ] && _b=$d/$1 && break
  done; IFS=$_IFS; }
# In a job: the command is waited for (not run in the foreground) so that the job, stopped, stops it.
vc_run() { vc_start "$@"; _c=$!; wait $_c; rc=$?; _c=; [ $rc = 0 ] || echo $rc > "$C/$n.rc"; }
# A background job: stopped (by the watchdog, or the script's exit), it stops its running command, whose exit
# status is then the watchdog's 124, and leaves.
vc_bg() { ( _c=; trap "[ -z \$_c ] || { kill \$_c 2>/dev/null; echo 124 > \"\$C/\$n.rc\"; }; exit 143" TERM; "$@" ) &
  _ps="$_ps $!"; _js="$_js $!"; }
# A command alone in its job runs straight from this shell, no job shell forked for it: vc_wait writes its exit status.
# vc_all CMD ARG... + CMD ARG... + ...: vc_start for each (no word of theirs is +, none holds a glob character).
vc_all() { _a=; for w in "$@" +; do [ "$w" = + ] && { vc_start $_a; _a=; } || _a="$_a $w"; done; }
vc_start() { vc_name "$@"; shift; "$_b" "$@" > "$C/$n" 2> "$C/$n.err" < /dev/null & _ps="$_ps $!"; _st="$_st $!:$n"; }
# The watchdog of the commands and jobs started (_ps): past the bound it stops those still running (this shell's
# children, not exited: /proc/PID/stat says so where it is the host's) and lists them in $T/late, its last step not
# cut short by vc_wait's stop. Without sleep on the host, it leaves at once: the commands run unbounded.
# It is stopped by the file $T/s<its number> and a TERM: a TERM sent before its trap is set may be lost (dash,
# busybox sh), and one that comes before its sleep has a pid leaves that to the file. Its sleep is stopped by KILL:
# just forked, it may still be a shell that would lose a TERM.
vc_watch() {
  _k=$((_k+1))
  ( _l=$_ps; _s=; trap "[ -z \$_s ] || { kill -9 \$_s; exit 0; }" TERM
    sleep @TIMEOUT@ & _s=$!
    [ ! -e "$T/s$_k" ] || kill -9 $_s
    wait $_s && [ ! -e "$T/s$_k" ] || exit 0
    trap "" TERM; IFS=" "
    for p in $_l; do
      _z=; read -r _z < /proc/$p/stat; set -- ${_z##*) }
      [ -z "$_z" ] || { [ "$1" != Z ] && [ "$2" = $$ ]; } || continue
      kill $p && echo $p >> "$T/late"
    done ) > /dev/null 2>&1 < /dev/null &
  _w=$!; _ps="$_ps $_w"
}
# The commands and jobs done (or stopped by the watchdog, then 124), and the watchdog stopped.
vc_wait() {
  for j in $_st; do wait ${j%%:*} 2>/dev/null; rc=$?; [ $rc = 0 ] || echo $rc > "$C/${j#*:}.rc"; done
  [ -z "$_js" ] || wait $_js 2>/dev/null
  : > "$T/s$_k"; { kill $_w; wait $_w; } 2>/dev/null
  [ ! -s "$T/late" ] || { while read -r p; do for j in $_st; do [ "${j%%:*}" != "$p" ] || echo 124 > "$C/${j#*:}.rc"
    done; done < "$T/late"; : > "$T/late"; }
  _ps=; _st=; _js=
}
vc_alone() { vc_start "$@"; vc_watch; vc_wait; }
"""

_EPILOGUE = r"""
# meta.json: only values checked against a charset that needs no JSON escaping go in; the hostname is the one
# `uname -n` printed.
_m='{"format": "@FORMAT@", "absence": "@ABSENCE@"'
_v=$(date -u +%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
case $_v in ""|*[!0-9TZ:-]*) ;; *) _m="$_m, \"collected_at\": \"$_v\"" ;; esac
_v=; read -r _v < "$C/@UNAME_N@" 2>/dev/null
case $_v in ""|*[!A-Za-z0-9._-]*) ;; *) _m="$_m, \"hostname\": \"$_v\"" ;; esac
case $KREL in ""|*[!A-Za-z0-9._+~-]*) ;; *) _m="$_m, \"kernel_release\": \"$KREL\"" ;; esac
printf "%s}\n" "$_m" > "$T/meta.json"
# A full file system cuts files short without a word from what wrote them: one more block must fit, else nothing
# is sent.
printf %4096s > "$T/z" 2>/dev/null || { echo "no space left in ${T%/*}" >&2; exit @NOSPACE@; }
# The commands' empty stderr files, in one rm; tar run from this shell (no subshell forked for it).
_e=; for f in "$C"/*.err; do [ -s "$f" ] || _e="$_e$NL$f"; done
[ -z "$_e" ] || { IFS=$NL; set -f; rm -f -- $_e; IFS=$_IFS; set +f; }
_n=; [ ! -f "$T/notes" ] || _n=notes
vc_tar() { tar -C "$T" -cf - meta.json root commands $_n | gzip -c; }
if [ -n "${1:-}" ]; then
  vc_tar > "$1" || exit 74
  echo "$1"
else
  echo "@BEGIN@"
  vc_tar | base64
  echo "@END@"
fi
"""


_GLOB = "*?["


def _words(items: list[str]) -> str:
    # Spec paths are our own constants: globs and $KREL must stay unquoted for the shell. A command's words are
    # joined by _ for its file name (vc_name): no word is empty, none holds a blank.
    for item in items:
        if not item or any(c in item for c in "'\"`;&|<>()\\ \t\n"):
            raise ValueError(f"collection spec entry not safe for the script: {item!r}")
    return " ".join(items)


# The script travels as one command under Dropbear's limit (DROPBEAR_MAX_COMMAND): the path words it repeats most are
# written once, as shell variables set at its top, and each path word uses them ($PCI/*/driver). A path is expanded
# when the function it is given to is called (globbing and all), as the word written out would be.
ABBREVIATIONS = (
    ("DT", "/sys/firmware/devicetree/base"),
    ("PCI", "/sys/bus/pci/devices"),
    ("BDF", "[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7]"),
    ("MOD", "/sys/module"),
    ("CLS", "/sys/class"),
    ("ACPI", "/sys/firmware/acpi/tables"),
    ("IOG", "/sys/kernel/iommu_groups"),
    ("USB", "/sys/bus/usb/devices"),
    ("DV", "/dev/vfio"),
    ("DEF", "/etc/default"),
)


def _paths(items: list[str]) -> str:
    """Path words, as _words, each with ABBREVIATIONS: `${NAME}` where a name character follows."""
    text = _words(items)
    for name, value in ABBREVIATIONS:
        parts = text.split(value)
        text = parts[0] + "".join((f"${{{name}}}" if part[:1].isalnum() or part[:1] == "_" else f"${name}") + part
                                  for part in parts[1:])
    return text


def expanded(text: str) -> str:
    """A rendered path word (or the script) with its ABBREVIATIONS written out again."""
    for name, value in reversed(ABBREVIATIONS):
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return text


def _commands() -> list[str]:
    """The commands: those that run alone first, then every other one in the background (the job of a command
    that a CommandEach takes its names from goes on with that CommandEach), under one watchdog."""
    def run(command: spec.Command) -> str:
        return f"vc_run {_words(command.line.split(' '))}"

    def each(command: spec.CommandEach) -> str:
        return f"vc_each {_words([str(command.limit), command.names_from.replace(' ', '_'), *command.line.split(' ')])}"

    commands = [s for s in spec.SOURCES if isinstance(s, spec.Command) and s.line in spec.COMMANDS]  # not the CommandEach
    # The kernel release names files to copy: its command runs first, and what it printed is $KREL.
    lines = [f"{run(spec.UNAME_R)}; _ps=; _st=", f'KREL=; read -r KREL < "$C/{spec.UNAME_R.file_name}"']
    commands.remove(spec.UNAME_R)
    lines += [f"vc_alone {_words(c.line.split(' '))}" for c in commands if c.alone]
    alone = []  # started by one vc_all
    for command in (c for c in commands if not c.alone):
        then = [each(e) for e in spec.COMMANDS_EACH if e.names_from == command.line]
        if then:
            lines.append(f'vc_bg eval "{"; ".join([run(command), *then])}"')
        elif any(c in command.line for c in _GLOB) or "+" in command.line.split(" "):
            raise ValueError(f"a command run side by side holds a glob character or the word +: {command.line!r}")
        else:
            alone.append(_words(command.line.split(" ")))
    return [*lines, f"vc_all {' + '.join(alone)}", "vc_watch"]


def _links() -> list[spec.Link]:
    """The links in the order vc_links matches them: a link's glob is matched as a case pattern (`*` spans
    folders there), so none may match a link that an earlier one is declared for."""
    for n, link in enumerate(spec.LINKS):
        if not link.path.startswith("/") or link.target_prefix.startswith("/"):
            raise ValueError(f"a link's glob is an absolute path, its prefix relative: {link}")
        shadowing = [e.path for e in spec.LINKS[:n] if fnmatchcase(link.at(*["0000:00:01.0"] * 4), e.path)]
        if shadowing:
            raise ValueError(f"{link.path} is matched by the earlier link glob {shadowing[0]}")
    return list(spec.LINKS)


def render_script(command_timeout_s: int = COMMAND_TIMEOUT_S) -> str:
    """The script; each command it runs is bounded by `command_timeout_s` (whole seconds)."""
    lines = ["#!/bin/sh", "# vfio-certify collector: reads the host, changes nothing."]
    prelude = _PRELUDE.replace("@TIMEOUT@", str(int(command_timeout_s))).replace("@MISSING@", str(MISSING_TOOL_STATUS))
    prelude = prelude.replace("@ABBREVIATIONS@", "; ".join(f"{name}={value}" for name, value in ABBREVIATIONS))
    lines.append(prelude.strip("\n"))
    lines += _commands()
    lines.append("_D=; for _P in 1 2; do")
    lines.append(f"vc_folder {_paths(spec.PROBED_FOLDERS)}")
    lines.append(f"vc_copy {_paths([f.path for f in spec.COPY_FILES])}")
    for fallback in spec.COPY_IF_ABSENT:
        lines.append(f'[ -f {_paths([fallback.unless.path])} ] || vc_copy {_paths([fallback.path])}')
    lines.append(f"vc_mark {_paths([m.path for m in spec.MARK_EXISTS])}")
    lines.append("set -f; vc_links " + " ".join(_words([link.target_prefix]) + " " + _paths([link.path]) for link in _links()))
    for path in dict.fromkeys(a.path for a in spec.ATTRIBUTES):  # one read per folder glob
        names = [n for a in spec.ATTRIBUTES if a.path == path for n in a.names]
        text_names = [n for a in spec.ATTRIBUTES if a.path == path for n in a.text_names]
        lines.append(f'vc_attrs "{_words(names)}" "{_words(text_names)}" {_paths([path])}')
    lines.append('[ $_P = 2 ] || vc_md "$_D"')
    lines.append("done")
    lines.append("vc_wait")
    for opened in spec.OPEN_FILES:  # after the commands: their jobs are not listed, and vc_wait keeps its empty .err
        lines.append(f"vc_open {_words([opened.line, str(opened.limit)])} {_paths([opened.folder, *opened.when])}")
    epilogue = _EPILOGUE.replace("@FORMAT@", FORMAT).replace("@ABSENCE@", ABSENCE_PARENT_FOLDER)
    epilogue = epilogue.replace("@UNAME_N@", spec.UNAME_N.file_name).replace("@NOSPACE@", str(NO_SPACE_STATUS))
    lines.append(epilogue.replace("@BEGIN@", BEGIN_MARK).replace("@END@", END_MARK).strip("\n"))
    # The script travels as one command, and Dropbear closes the connection on a command over MAX_CMD_LEN (9000
    # bytes): its comments and indentation are read here, not sent (the two header lines are). No line of it
    # continues a quoted string whose leading blanks would count.
    text = "\n".join(lines)
    return "\n".join(line if n < 2 else line.lstrip() for n, line in enumerate(text.split("\n"))
                     if n < 2 or not line.lstrip().startswith("#")) + "\n"
