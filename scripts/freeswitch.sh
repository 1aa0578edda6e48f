#!/usr/bin/env bash
# Provision FreeSWITCH directory users (SIP extensions) for esl-bridge.
#
# Replaces the old SRProxy "freeswitch.sh" loop: validated ranges and lists,
# per-user passwords, a proper template rewrite, idempotent runs, a dry run,
# removal of exactly the users this script created, and reloadxml.
# Run with --help for usage.

set -euo pipefail

readonly PROG=${0##*/}
# First line of every file this script writes; it is how the script recognises
# its own files. Delete that line to keep a file out of the script's hands.
readonly MARKER_TOKEN='esl-bridge:managed'
readonly MARKER="<!-- ${MARKER_TOKEN}: written by esl-bridge scripts/freeswitch.sh; delete this line to take the file over -->"
readonly MAX_USERS=10000
readonly DEFAULT_DIRS=(/usr/local/freeswitch/conf/directory/default /etc/freeswitch/directory/default)

usage() {
    cat <<EOF
Usage: $PROG [options] (--range FROM-TO | --ext N[,N...])...
       $PROG check [--conf rtx.conf] [--json] [--context CTX] [--timeout S]
                   [--install [--dry-run] [--conf-dir DIR]]
       $PROG --list [--json] [-d DIR]
       $PROG --acc-rule [--conf rtx.conf] [--json] [-d DIR]

Create (or with --remove delete) FreeSWITCH directory users N.xml.

Selection (repeatable, combined):
  -r, --range FROM-TO     extensions FROM..TO inclusive, e.g. 1020-1099
  -e, --ext LIST          comma-separated extensions, e.g. 1005,1006
Options:
  -d, --dir DIR           directory of user files (default: \$FREESWITCH_USER_DIR,
                          else the first existing of
                          ${DEFAULT_DIRS[0]}
                          ${DEFAULT_DIRS[1]})
  -p, --password PW       password for every user (XML special characters are
                          escaped; '\$' only as a whole \$\${variable} reference)
  -o, --passwords-file F  append generated credentials to F (created mode 600)
                          instead of printing them to stdout
  -t, --template N        build users from DIR/N.xml (standalone occurrences of N
                          are replaced by the new number; the password param is
                          set); default: a built-in template
  -c, --context CTX       user_context of the built-in template (default: default)
  -f, --force             overwrite user files this script did not create
  -n, --dry-run           print what would be done, change nothing
      --remove            delete the selected users that this script created
      --no-reload         do not run 'fs_cli -x reloadxml' after a change
      --json              print the result as one JSON object: mode, dry_run,
                          directory, users [{extension, action, password (a
                          generated one, unless --passwords-file takes it)}],
                          the counts and reloaded (true, false, null)
  -h, --help              show this help

Without --password every new user gets a random password, printed once as
"EXTENSION PASSWORD" on stdout (or appended to --passwords-file). Users this
script created earlier keep their password, so re-running with the same
arguments changes nothing. Messages go to stderr; a dry run prints its plan
on stdout.

Files written carry the marker comment '$MARKER_TOKEN' on their first line;
files without it are never overwritten (unless --force) nor removed.

After a change, 'fs_cli -x reloadxml' runs when fs_cli (or \$FS_CLI) is found.

Exit status: 0 success, 1 error, 2 bad usage, 3 conflicting files (nothing changed).

'check' asks the running FreeSWITCH (over its event socket, [esl] of rtx.conf;
127.0.0.1:8021 and the default password without --conf) whether it is set up
for the gateway, and prints one OK/FAIL line per check with the fix: event
socket, modules, esl_bridge_socket = [socket], the 0 route first for 0<uid>
with rtp_autoflush and 'async full', codecs, acc_rule users in the directory
(and how many are registered). It changes nothing. --json prints the result as
JSON. Exit status: 0 all checks pass, 1 a check failed, 2 rtx.conf unusable.
With --install it first does the set-up steps that are missing, each only when
needed: the esl_bridge_socket line of conf/vars.xml, the 0 route
(dialplan/default/00_esl_bridge.xml into conf/dialplan/default/), reloadxml;
--dry-run prints them only; --conf-dir is FreeSWITCH's conf directory
(/usr/local/freeswitch/conf or /etc/freeswitch when omitted).

'--list' prints the users this script manages, one "EXTENSION STATE" line each,
STATE being registered / not registered (from 'fs_cli -x "show registrations"')
or unknown without fs_cli. '--acc-rule' prints the acc_rule expression of those
users; with --conf it checks rtx.conf's [rtm2sip] acc_rule against them (exit 1
when they differ, with the numbers on each side). --json: JSON instead.
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    exit "${2:-1}"
}
usage_error() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    printf "Try '%s --help'.\n" "$PROG" >&2
    exit 2
}
note() { printf '%s\n' "$*" >&2; }

# 'check' is done in Python with the project's ESL client (esl_bridge/switch_check.py):
# the checkout's copy when this script is run from one, else the installed esl-bridge.
if [[ ${1:-} == check ]]; then
    shift
    root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
    if [[ -f $root/esl_bridge/__init__.py ]]; then
        PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "${PYTHON:-python3}" -m esl_bridge check-switch "$@"
    fi
    command -v esl-bridge >/dev/null 2>&1 || die "esl-bridge is not installed (pip install esl-bridge)" 2
    exec esl-bridge check-switch "$@"
fi

# ---------------------------------------------------------------- arguments --

ranges=()
ext_lists=()
dir=${FREESWITCH_USER_DIR:-}
password=
password_set=0
passwords_file=
template=
context=default
context_set=0
force=0
dry_run=0
remove=0
reload=1
mode=provision
conf=
json=0

need_arg() {
    [[ $# -ge 2 && -n $2 ]] || usage_error "option $1 needs a value"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        -r | --range) need_arg "$@"; ranges+=("$2"); shift 2 ;;
        --range=*) ranges+=("${1#*=}"); shift ;;
        -e | --ext) need_arg "$@"; ext_lists+=("$2"); shift 2 ;;
        --ext=*) ext_lists+=("${1#*=}"); shift ;;
        -d | --dir) need_arg "$@"; dir=$2; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        -p | --password) need_arg "$@"; password=$2; password_set=1; shift 2 ;;
        --password=*) password=${1#*=}; password_set=1; shift ;;
        -o | --passwords-file) need_arg "$@"; passwords_file=$2; shift 2 ;;
        --passwords-file=*) passwords_file=${1#*=}; shift ;;
        -t | --template) need_arg "$@"; template=$2; shift 2 ;;
        --template=*) template=${1#*=}; shift ;;
        -c | --context) need_arg "$@"; context=$2; context_set=1; shift 2 ;;
        --context=*) context=${1#*=}; context_set=1; shift ;;
        -f | --force) force=1; shift ;;
        -n | --dry-run) dry_run=1; shift ;;
        --remove) remove=1; shift ;;
        --no-reload) reload=0; shift ;;
        --list) mode=list; shift ;;
        --acc-rule) mode=acc-rule; shift ;;
        --conf) need_arg "$@"; conf=$2; shift 2 ;;
        --conf=*) conf=${1#*=}; shift ;;
        --json) json=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; [[ $# -eq 0 ]] || usage_error "unexpected argument '$1'" ;;
        -*) usage_error "unknown option '$1'" ;;
        *) usage_error "unexpected argument '$1'" ;;
    esac
done

# ------------------------------------------------------------- validation --

# An extension: 1 to 9 digits, no leading zero. Numbers starting with 0 would
# collide with the dialplan's "0" prefix route to the gateway, and leading
# zeros would make "0100" and "100" different users.
is_extension() {
    [[ $1 =~ ^[1-9][0-9]{0,8}$ ]]
}
check_extension() {
    local what=$1 value=$2
    if [[ -z $value ]]; then
        usage_error "$what: empty extension"
    elif [[ ! $value =~ ^[0-9]+$ ]]; then
        usage_error "$what: '$value' is not a number (digits only)"
    elif [[ $value == 0* ]]; then
        usage_error "$what: '$value' starts with 0 (reserved for the dialplan's 0 prefix route)"
    elif ! is_extension "$value"; then
        usage_error "$what: '$value' has more than 9 digits"
    fi
}

if [[ $mode == provision ]]; then
    [[ ${#ranges[@]} -gt 0 || ${#ext_lists[@]} -gt 0 ]] ||
        usage_error "select users with --range FROM-TO and/or --ext N[,N...]"
    [[ -z $conf ]] || usage_error "--conf goes with check or --acc-rule"
else
    [[ ${#ranges[@]} -eq 0 && ${#ext_lists[@]} -eq 0 ]] ||
        usage_error "--$mode covers every user this script manages: no --range or --ext"
    ((remove == 0 && force == 0 && dry_run == 0 && password_set == 0)) ||
        usage_error "--$mode changes nothing: no --remove, --force, --dry-run or --password"
    [[ -z $conf || $mode == acc-rule ]] || usage_error "--conf goes with --acc-rule or check"
fi

if ((remove)); then
    ((force == 0)) || usage_error "--force cannot be combined with --remove (only users this script created are removed)"
fi

wanted=()
for r in ${ranges[@]+"${ranges[@]}"}; do
    [[ $r =~ ^([^-]*)-([^-]*)$ ]] || usage_error "--range '$r': expected FROM-TO, e.g. 1020-1099"
    from=${BASH_REMATCH[1]}
    to=${BASH_REMATCH[2]}
    check_extension "--range '$r'" "$from"
    check_extension "--range '$r'" "$to"
    ((10#$from <= 10#$to)) || usage_error "--range '$r': FROM is greater than TO"
    ((10#$to - 10#$from < MAX_USERS)) || usage_error "--range '$r': more than $MAX_USERS extensions"
    for ((n = 10#$from; n <= 10#$to; n++)); do
        wanted+=("$n")
    done
done
for list in ${ext_lists[@]+"${ext_lists[@]}"}; do
    [[ $list != *, && $list != ,* && $list != *,,* ]] || usage_error "--ext '$list': empty item"
    IFS=, read -r -a items <<<"$list"
    for e in "${items[@]}"; do
        check_extension "--ext '$list'" "$e"
        wanted+=("$e")
    done
done
mapfile -t extensions < <(printf '%s\n' "${wanted[@]}" | sort -n -u)
((${#extensions[@]} <= MAX_USERS)) || usage_error "more than $MAX_USERS extensions selected"

if [[ -n $template ]]; then
    check_extension "--template" "$template"
    for e in "${extensions[@]}"; do
        [[ $e != "$template" ]] || usage_error "--template $template is one of the selected extensions"
    done
fi
[[ $context =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "--context '$context': use letters, digits, '_', '.', '-'"
if [[ -n $template && $context_set -eq 1 ]]; then
    usage_error "--context applies to the built-in template only; set user_context in the --template file"
fi

# The password goes into an XML attribute of a file that FreeSWITCH's
# preprocessor reads line by line: escape the XML specials, and refuse what
# the preprocessor would act on (control characters, '$' expansions, the
# pre-process keyword). A whole '$${name}' is kept as a deliberate reference.
xml_escape() {
    local s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            '&') out+='&amp;' ;;
            '<') out+='&lt;' ;;
            '>') out+='&gt;' ;;
            '"') out+='&quot;' ;;
            "'") out+='&apos;' ;;
            *) out+=$c ;;
        esac
    done
    printf '%s' "$out"
}

# A string as a JSON string's contents (the directory path of --list --json).
json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '%s' "$s"
}

password_xml=
if ((password_set && !remove)); then
    [[ -n $password ]] || usage_error "--password: empty password"
    if [[ $password =~ [[:cntrl:]] ]]; then
        usage_error "--password: control characters (newline, tab...) are not allowed"
    fi
    if [[ $password =~ ^\$\$\{[A-Za-z0-9_]+\}$ ]]; then
        password_xml=$password
    else
        [[ $password != *'$'* ]] ||
            usage_error "--password: '\$' is not allowed (FreeSWITCH expands \$\${...}); a whole \$\${variable} reference is"
        shopt -s nocasematch
        if [[ $password == *x-pre-process* ]]; then
            usage_error "--password: contains a FreeSWITCH preprocessor keyword"
        fi
        shopt -u nocasematch
        password_xml=$(xml_escape "$password")
    fi
fi

if [[ -z $dir ]]; then
    for d in "${DEFAULT_DIRS[@]}"; do
        if [[ -d $d ]]; then
            dir=$d
            break
        fi
    done
    [[ -n $dir ]] || die "no FreeSWITCH user directory found (${DEFAULT_DIRS[*]}); use --dir or FREESWITCH_USER_DIR"
fi
[[ -d $dir ]] || die "directory '$dir' does not exist"
dir=${dir%/}
[[ -n $dir ]] || dir=/

template_text=
if [[ -n $template && $remove -eq 0 ]]; then
    tfile=$dir/$template.xml
    [[ -f $tfile && -r $tfile ]] || die "template '$tfile' does not exist or is not readable"
    template_text=$(<"$tfile")
    re='<user[[:space:]][^>]*id="'$template'"'
    [[ $template_text =~ $re ]] || die "template '$tfile' does not define <user id=\"$template\">"
    re='<param[[:space:]]+name="password"[[:space:]]+value="[^"]*"'
    [[ $template_text =~ $re ]] || die "template '$tfile' has no <param name=\"password\" value=\"...\"/>"
fi

# ---------------------------------------------------------------- helpers --

is_managed() {
    local first=
    [[ -f $1 ]] || return 1
    IFS= read -r first <"$1" || true
    [[ $first == *"$MARKER_TOKEN"* ]]
}

# Password attribute value (XML-escaped, as stored) of a user file, or nothing.
stored_password() {
    sed -n -E 's/.*<param[[:space:]]+name="password"[[:space:]]+value="([^"]*)".*/\1/p' "$1" | head -n 1
}

generate_password() {
    # 96 random bits as 24 hex digits: safe in SIP, XML and shell alike.
    od -An -N12 -tx1 /dev/urandom | tr -d ' \n'
}

# Escape a string for the replacement part of a sed s||| command.
sed_replacement() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//|/\\|}
    s=${s//&/\\&}
    printf '%s' "$s"
}

# File content for extension $1 with the (escaped) password $2, on stdout.
render() {
    local ext=$1 pw=$2
    printf '%s\n' "$MARKER"
    if [[ -n $template_text ]]; then
        # Replace the template number only where it stands alone (not inside
        # 10000 or 21000). Two passes: with the g flag, an occurrence right
        # after a replaced one loses its separator to the previous match.
        local standalone="(^|[^0-9])$template([^0-9]|\$)"
        printf '%s\n' "$template_text" |
            { grep -v -F "$MARKER_TOKEN" || true; } |
            sed -E -e "s/$standalone/\\1$ext\\2/g" -e "s/$standalone/\\1$ext\\2/g" \
                -e "s|(<param[[:space:]]+name=\"password\"[[:space:]]+value=\")[^\"]*\"|\\1$(sed_replacement "$pw")\"|"
    else
        cat <<EOF
<include>
  <user id="$ext">
    <params>
      <param name="password" value="$pw"/>
      <param name="vm-password" value="$ext"/>
    </params>
    <variables>
      <variable name="toll_allow" value="domestic,international,local"/>
      <variable name="accountcode" value="$ext"/>
      <variable name="user_context" value="$context"/>
      <variable name="effective_caller_id_number" value="$ext"/>
    </variables>
  </user>
</include>
EOF
    fi
}

# user id -> files of the directory that define it (one grep for all files).
declare -A defined_in=()
index_users() {
    local line path id
    local -a files=()
    for path in "$dir"/*.xml; do
        [[ -f $path ]] && files+=("$path")
    done
    ((${#files[@]} > 0)) || return 0
    while IFS= read -r line; do
        path=${line%%:<user*}
        id=${line##*id=\"}
        id=${id%\"}
        defined_in[$id]+="${path##*/}/"
    done < <(grep -H -o -E '<user[[:space:]]([^>]*[[:space:]])?id="[^"]*"' -- "${files[@]}" || true)
}

# Files other than $1.xml that already define user id $1.
defined_elsewhere() {
    local ext=$1 f out=''
    local -a names=()
    # '/' separates the names: it cannot occur in a file name.
    IFS=/ read -r -a names <<<"${defined_in[$ext]:-}"
    for f in ${names[@]+"${names[@]}"}; do
        [[ $f == "$ext.xml" ]] || out+="${out:+, }$f"
    done
    printf '%s' "$out"
}

tmpfiles=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local f
    for f in ${tmpfiles[@]+"${tmpfiles[@]}"}; do
        rm -f -- "$f"
    done
}
trap cleanup EXIT

# Write $2 (content) to $1 atomically; keep mode/owner of an existing file.
write_file() {
    local target=$1 content=$2 tmp
    tmp=$(mktemp "$dir/.esl-bridge.XXXXXX") || die "cannot create a file in '$dir'"
    tmpfiles+=("$tmp")
    printf '%s\n' "$content" >"$tmp" || die "cannot write '$tmp'"
    if [[ -e $target ]]; then
        chmod --reference="$target" "$tmp" 2>/dev/null || chmod 0640 "$tmp"
        chown --reference="$target" "$tmp" 2>/dev/null || true
    else
        # The file holds a password: not world-readable; group of the directory
        # so that a FreeSWITCH running as that group can read it.
        chmod 0640 "$tmp"
        chgrp --reference="$dir" "$tmp" 2>/dev/null || true
    fi
    mv -f -- "$tmp" "$target" || die "cannot write '$target'"
}

# ---------------------------------------------------- --list, --acc-rule --

# The users this script manages (marked files named N.xml), in numeric order.
managed_users() {
    local path ext
    for path in "$dir"/*.xml; do
        ext=${path##*/}
        ext=${ext%.xml}
        if is_extension "$ext" && is_managed "$path"; then
            printf '%s\n' "$ext"
        fi
    done | sort -n
}

# reg_user of each registration FreeSWITCH has now (`show registrations`: a CSV header
# starting "reg_user,", one line per registration, a blank line, "N total.").
registered_users() {
    "$1" -x 'show registrations' 2>/dev/null |
        sed -n -e '/^reg_user,/,/^$/{/^reg_user,/d;/^$/d;s/,.*//;p}'
}

if [[ $mode != provision ]]; then
    mapfile -t own_users < <(managed_users)
    if [[ $mode == acc-rule ]]; then
        ((${#own_users[@]} > 0)) || die "no user in '$dir' was created by this script"
        root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
        args=(acc-rule)
        [[ -z $conf ]] || args+=(--conf "$conf")
        ((json == 0)) || args+=(--json)
        if [[ -f $root/esl_bridge/__init__.py ]]; then
            printf '%s\n' "${own_users[@]}" |
                PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} "${PYTHON:-python3}" -m esl_bridge "${args[@]}"
        else
            command -v esl-bridge >/dev/null 2>&1 || die "esl-bridge is not installed" 2
            printf '%s\n' "${own_users[@]}" | esl-bridge "${args[@]}"
        fi
        exit
    fi
    # --list: each managed user and whether it is registered now (unknown without fs_cli).
    declare -A registered=()
    known=0
    fs_cli=${FS_CLI:-fs_cli}
    if command -v "$fs_cli" >/dev/null 2>&1; then
        known=1
        while IFS= read -r user; do
            registered[$user]=1
        done < <(registered_users "$fs_cli")
    else
        note "$PROG: fs_cli not found: registration state unknown"
    fi
    first=1
    ((json == 0)) || printf '{"directory": "%s", "users": [' "$(json_escape "$dir")"
    for ext in ${own_users[@]+"${own_users[@]}"}; do
        if ((known)) && [[ -n ${registered[$ext]:-} ]]; then
            state=registered json_state=true
        elif ((known)); then
            state='not registered' json_state=false
        else
            state=unknown json_state=null
        fi
        if ((json)); then
            ((first)) || printf ', '
            printf '{"extension": "%s", "registered": %s}' "$ext" "$json_state"
        else
            printf '%s %s\n' "$ext" "$state"
        fi
        first=0
    done
    ((json == 0)) || printf ']}\n'
    exit 0
fi

# ------------------------------------------------------------------- plan --

# Each selected extension gets one action: create, update, keep, remove,
# skip (nothing to remove), or conflict. Nothing is written before the whole
# plan is known, so a conflict leaves the directory untouched.
((remove)) || index_users
actions=()
contents=()
new_passwords=()
conflicts=()

for ext in "${extensions[@]}"; do
    file=$dir/$ext.xml
    if ((remove)); then
        if [[ ! -e $file ]]; then
            actions+=(absent)
        elif is_managed "$file"; then
            actions+=(remove)
        else
            actions+=(foreign)
        fi
        contents+=("")
        new_passwords+=("")
        continue
    fi

    exists=0
    managed=0
    if [[ -e $file || -L $file ]]; then
        exists=1
        if [[ ! -f $file ]]; then
            conflicts+=("$ext.xml exists and is not a regular file")
            actions+=(conflict)
            contents+=("")
            new_passwords+=("")
            continue
        fi
        if is_managed "$file"; then
            managed=1
        elif ((!force)); then
            conflicts+=("$ext.xml exists and was not created by this script (use --force to overwrite it)")
            actions+=(conflict)
            contents+=("")
            new_passwords+=("")
            continue
        fi
    else
        others=$(defined_elsewhere "$ext")
        if [[ -n $others ]]; then
            conflicts+=("user $ext is already defined in: $others")
            actions+=(conflict)
            contents+=("")
            new_passwords+=("")
            continue
        fi
    fi

    generated=
    if ((password_set)); then
        pw=$password_xml
    elif ((managed)) && pw=$(stored_password "$file") && [[ -n $pw ]]; then
        : # keep the password this script stored earlier
    elif ((dry_run)); then
        pw='(generated)'
        generated=$pw
    else
        pw=$(generate_password)
        [[ ${#pw} -eq 24 ]] || die "cannot read random bytes from /dev/urandom"
        generated=$pw
    fi

    content=$(render "$ext" "$pw")
    re='<user[[:space:]][^>]*id="'$ext'"'
    [[ $content =~ $re ]] ||
        die "rendering user $ext failed (template without a <user id=...>?)"

    if ((exists)) && [[ $(<"$file") == "$content" ]] && ((managed)); then
        actions+=(keep)
    elif ((exists)); then
        actions+=(update)
    else
        actions+=(create)
    fi
    contents+=("$content")
    new_passwords+=("$generated")
done

if ((${#conflicts[@]} > 0)); then
    for c in "${conflicts[@]}"; do
        note "$PROG: conflict: $c"
    done
    die "${#conflicts[@]} conflict(s); nothing was changed" 3
fi

# ------------------------------------------------------------------ apply --

if [[ -n $passwords_file && $dry_run -eq 0 ]]; then
    if [[ -e $passwords_file ]]; then
        [[ -f $passwords_file && -w $passwords_file ]] || die "--passwords-file '$passwords_file' is not a writable file"
    else
        pdir=.
        [[ $passwords_file != */* ]] || pdir=${passwords_file%/*}
        [[ -w ${pdir:-/} ]] || die "--passwords-file '$passwords_file': directory not writable"
    fi
fi

# A generated password is handed out as soon as its file is written, so that
# a failure later on cannot lose it (with --json: in the JSON printed at the end; if a
# later step fails before it, each written user's file holds its password).
emit_credential() {
    if [[ -n $passwords_file ]]; then
        (umask 077 && printf '%s %s\n' "$1" "$2" >>"$passwords_file") ||
            die "cannot write '$passwords_file'; the password of $1 is in $dir/$1.xml"
    elif ((json == 0)); then
        printf '%s %s\n' "$1" "$2"
    fi
}

created=0 updated=0 kept=0 removed=0 skipped=0 handed_out=0
prefix=
((dry_run)) && prefix='would '
# --json: one {"extension", "action"[, "password"]} per selected user, printed at the end
# (a generated password goes there instead of stdout, unless --passwords-file takes it).
json_users=()
json_user() {
    local entry
    entry='{"extension": "'$1'", "action": "'$2'"'
    [[ -z ${3:-} ]] || entry+=', "password": "'$(json_escape "$3")'"'
    json_users+=("$entry}")
}

for i in "${!extensions[@]}"; do
    ext=${extensions[i]}
    file=$dir/$ext.xml
    case ${actions[i]} in
        create | update)
            if ((dry_run)); then
                ((json)) || printf '%s%s %s\n' "$prefix" "${actions[i]}" "$file"
                json_user "$ext" "${actions[i]}"
            else
                write_file "$file" "${contents[i]}"
                note "${actions[i]}d $file"
                shown=
                if [[ -n ${new_passwords[i]} ]]; then
                    emit_credential "$ext" "${new_passwords[i]}"
                    handed_out=$((handed_out + 1))
                    [[ -n $passwords_file ]] || shown=${new_passwords[i]}
                fi
                json_user "$ext" "${actions[i]}" "$shown"
            fi
            if [[ ${actions[i]} == create ]]; then created=$((created + 1)); else updated=$((updated + 1)); fi
            ;;
        keep)
            kept=$((kept + 1))
            json_user "$ext" unchanged
            ;;
        remove)
            if ((dry_run)); then
                ((json)) || printf '%sremove %s\n' "$prefix" "$file"
            else
                rm -f -- "$file" || die "cannot remove '$file'"
                note "removed $file"
            fi
            removed=$((removed + 1))
            json_user "$ext" remove
            ;;
        foreign)
            note "$PROG: not removing $file: not created by this script"
            skipped=$((skipped + 1))
            json_user "$ext" skipped_foreign
            ;;
        absent)
            skipped=$((skipped + 1))
            json_user "$ext" skipped_absent
            ;;
    esac
done

# The --json result: which mode, the directory, each user's action, the counts, whether
# FreeSWITCH reloaded its configuration (null: nothing changed or no reload asked).
print_json() {
    local mode_name=create first=1 entry
    ((remove)) && mode_name=remove
    printf '{"mode": "%s", "dry_run": %s, "directory": "%s", "users": [' \
        "$mode_name" "$( ((dry_run)) && echo true || echo false)" "$(json_escape "$dir")"
    for entry in "${json_users[@]}"; do
        ((first)) || printf ', '
        first=0
        printf '%s' "$entry"
    done
    printf '], "created": %d, "updated": %d, "unchanged": %d, "removed": %d, "skipped": %d, "reloaded": %s}\n' \
        "$created" "$updated" "$kept" "$removed" "$skipped" "$1"
}

if ((handed_out > 0)) && [[ -n $passwords_file ]]; then
    note "$handed_out generated password(s) appended to $passwords_file"
fi

if ((remove && dry_run)); then
    summary="would remove $removed, skipped $skipped"
elif ((remove)); then
    summary="removed $removed, skipped $skipped"
elif ((dry_run)); then
    summary="would create $created, would update $updated, unchanged $kept"
else
    summary="created $created, updated $updated, unchanged $kept"
fi
if ((dry_run)); then
    if ((json)); then
        print_json null
    else
        printf 'dry run: %s (nothing changed)\n' "$summary"
    fi
    exit 0
fi
note "$summary"

changed=$((created + updated + removed))
reloaded=null
if ((changed > 0 && reload)); then
    reloaded=false
    fs_cli=${FS_CLI:-fs_cli}
    if command -v "$fs_cli" >/dev/null 2>&1; then
        if "$fs_cli" -x reloadxml >&2; then
            note "FreeSWITCH configuration reloaded"
            reloaded=true
        else
            note "$PROG: warning: '$fs_cli -x reloadxml' failed; run it once FreeSWITCH is up"
        fi
    else
        note "fs_cli not found: run 'fs_cli -x reloadxml' to load the change"
    fi
fi
((json == 0)) || print_json "$reloaded"
exit 0
