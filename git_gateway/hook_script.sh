# Slipway's git hook (pre-receive and post-receive) for plain-http callbacks, in bash.
#
# git_gateway.hooks.install writes this file as hooks/pre-receive and hooks/post-receive with
# "#!<bash>" and the "# slipway-hook" marker above, and the Python hook program beside it as
# hooks/slipway-hook.py. The phase is the file's name.
#
# Why bash: a hook process runs on every push, twice. The Python program costs ~19 ms to start
# (interpreter + compiling its source); bash with its built-in /dev/tcp costs ~2 ms and starts no
# other process. It sends the same facts as the Python program's JSON payload as lines of text
# (git_gateway/hook_wire.py parses them; docs/ARCHITECTURE.md "Hook callback"):
#
#     slipway-hook 1
#     phase pre-receive            repo TEAM/PROJECT          pusher NAME
#     pusher-is-job 0|1            quarantine PATH (pre-receive only, when git gives one)
#     option VALUE                 (one line per push option, in order)
#     update OLD NEW REF           (one line per hook input line, in order)
#
# Values must not hold a line break: git's client refuses such push options; a hand-made client's
# is refused here. Whatever this script cannot do itself -- an https callback, a URL it does not
# understand, a server it cannot connect to (the reason in the message) -- it hands to the Python
# program before anything was sent, with the same input, so every message stays the same.

export LC_ALL=C                      # ${#var} counts bytes (Content-Length)
phase=${0##*/}
here=${0%/*}
url=${SLIPWAY_HOOK_URL-}

raw=
while IFS= read -r line || [[ -n $line ]]; do
    raw+=$line$'\n'
done

python_hook() {                      # the Python program, same input: it says what went wrong
    exec "$here/slipway-hook.py" "$phase" <<<"${raw%$'\n'}"
}

[[ -n $url ]] || python_hook         # not a push through the gateway: the program decides

case $url in
    http://*) rest=${url#http://} ;;
    *) python_hook ;;                # https (needs TLS) or not a URL at all
esac
hostport=${rest%%/*}
if [[ $rest == */* ]]; then path=/${rest#*/}; else path=/; fi
hostport=${hostport##*@}             # user:password@ is never sent nor shown
if [[ $hostport == \[* ]]; then      # [v6 address]:port
    host=${hostport#\[}; host=${host%%\]*}; port=${hostport##*\]}; port=${port#:}
elif [[ $hostport == *:* ]]; then
    host=${hostport%:*}; port=${hostport##*:}
else
    host=$hostport; port=
fi
port=${port:-80}
[[ -n $host && $port =~ ^[0-9]+$ && $path != *[[:space:]]* ]] || python_hook
shown=http://$hostport$path
timeout=${SLIPWAY_HOOK_TIMEOUT:-60}
[[ $timeout =~ ^[0-9]+([.][0-9]+)?$ ]] || timeout=60

say() { printf '%s\n' "$1" >&2; }
nl=$'\n'
cr=$'\r'

body="slipway-hook 1${nl}phase $phase${nl}repo ${SLIPWAY_REPO-}${nl}pusher ${SLIPWAY_PUSHER-}$nl"
body+="pusher-is-job ${SLIPWAY_PUSHER_IS_JOB:-0}$nl"
if [[ $phase == pre-receive && -n ${GIT_QUARANTINE_PATH-} ]]; then
    body+="quarantine $GIT_QUARANTINE_PATH$nl"
fi
count=${GIT_PUSH_OPTION_COUNT:-0}
[[ $count =~ ^[0-9]+$ ]] || count=0
for ((i = 0; i < count; i++)); do
    name=GIT_PUSH_OPTION_$i
    value=${!name-}
    if [[ $value == *[$nl$cr]* ]]; then
        say "slipway: push option $((i + 1)) has a line break; push options are one line each"
        [[ $phase == pre-receive ]] && exit 1
        value=${value//[$nl$cr]/ }
    fi
    body+="option $value$nl"
done
for v in "${SLIPWAY_REPO-}" "${SLIPWAY_PUSHER-}" "${GIT_QUARANTINE_PATH-}" "${SLIPWAY_HOOK_SECRET-}"; do
    [[ $v != *[$nl$cr]* ]] || python_hook
done
while IFS= read -r line; do
    line=${line%$cr}
    [[ -n $line ]] && body+="update $line$nl"
done <<<"$raw"

{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || python_hook   # nothing sent yet

request="POST $path HTTP/1.0${cr}${nl}Host: $hostport${cr}${nl}"
request+="Content-Type: text/x-slipway-hook${cr}${nl}Content-Length: ${#body}${cr}${nl}"
request+="Accept: text/plain${cr}${nl}X-Slipway-Hook-Secret: ${SLIPWAY_HOOK_SECRET-}${cr}${nl}"
request+="User-Agent: slipway-hook${cr}${nl}Connection: close${cr}${nl}${cr}${nl}"

failed() {                           # sent, but no usable answer: as the Python program says it
    if [[ $phase == pre-receive ]]; then
        say "slipway: the Slipway server is unavailable, try again (tried $shown: $1)"
        exit 1
    fi
    say "slipway: the push was stored but the Slipway server at $shown could not be told ($1); no job was started yet; a job this push reserved starts within a minute (slipway job list)"
    exit 0
}

printf '%s' "$request$body" >&3 2>/dev/null || failed "the connection was closed while sending"
IFS=' ' read -r -t "$timeout" _proto status _ <&3 || failed "timed out"
[[ $status =~ ^[0-9]+$ ]] || failed "the Slipway server sent a malformed HTTP reply"
while IFS= read -r -t "$timeout" line <&3; do
    [[ -z ${line%$cr} ]] && break
done
IFS= read -r -t "$timeout" first <&3
first=${first%$cr}
if [[ $first != ok && $first != refused ]]; then
    failed "HTTP $status from the Slipway server"
fi
while IFS= read -r -t "$timeout" line || [[ -n $line ]]; do
    [[ -n $line ]] && say "$line"
done <&3
exec 3<&-
if [[ $phase == pre-receive && ( $first != ok || $status -ge 400 ) ]]; then
    exit 1
fi
exit 0
