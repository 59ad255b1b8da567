# Sourced by the demo scripts: print each command as you would type it
# (arguments with spaces in quotes), then run it.
run() {
    printf '\n$'
    for arg in "$@"; do
        case $arg in
            *[!A-Za-z0-9_./:=-]*) printf " '%s'" "$arg" ;;
            *) printf ' %s' "$arg" ;;
        esac
    done
    printf '\n'
    "$@"
}
