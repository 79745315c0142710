# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pacer_global_optspecs
    string join \n config= json h/help V/version
end

function __fish_pacer_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pacer_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pacer_using_subcommand
    set -l cmd (__fish_pacer_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pacer -n "__fish_pacer_needs_command" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_needs_command" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_needs_command" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_needs_command" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "history" -d 'Runs, newest first'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "show" -d 'One run in full, with its captured output'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "jobs" -d 'Every job: schedule, zone, plugin, next fire, last status'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "stats" -d 'Per job: runs, success rate, duration and lateness percentiles'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "check" -d 'Validate the config and each job\'s params; print each job\'s next fires'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "plugins" -d 'Plugins found: name, version, ABI version, path, state'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "status" -d 'Whether pacerd runs, and how loaded it is'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "run" -d 'Start a run now (trigger `manual`), through the job\'s policies'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "cancel" -d 'Stop a running run (recorded `cancelled`)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "pause" -d 'Stop firing a job (survives restarts)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "resume" -d 'Fire a paused job again'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "reload" -d 'Re-read the config (like SIGHUP) and report the outcome'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "nodes" -d 'With [cluster]: every node, its state, last heartbeat, clock offset, runs in flight and config drift'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "why" -d 'A job\'s recent fires and what became of each, and its next fire'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "manual" -d 'Write every man page (roff) into DIR, for packaging'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pacer -n "__fish_pacer_using_subcommand history" -l job -d 'Only this job' -r
complete -c pacer -n "__fish_pacer_using_subcommand history" -l status -d 'Only this status (running, succeeded, failed, timed_out, crashed, skipped, cancelled, abandoned)' -r
complete -c pacer -n "__fish_pacer_using_subcommand history" -l since -d 'Scheduled at or after T: RFC 3339, or a duration ago such as 2h' -r
complete -c pacer -n "__fish_pacer_using_subcommand history" -l until -d 'Scheduled before T: RFC 3339, or a duration ago' -r
complete -c pacer -n "__fish_pacer_using_subcommand history" -l limit -d 'At most N runs' -r
complete -c pacer -n "__fish_pacer_using_subcommand history" -l before -d 'Only runs older than ID (the next page)' -r
complete -c pacer -n "__fish_pacer_using_subcommand history" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand history" -l follow -d 'Then print runs as they finish, until interrupted (with --json: one object per line)'
complete -c pacer -n "__fish_pacer_using_subcommand history" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand history" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand history" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand show" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand show" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand show" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand show" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand jobs" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand jobs" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand jobs" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand jobs" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand stats" -l job -d 'Only this job' -r
complete -c pacer -n "__fish_pacer_using_subcommand stats" -l since -d 'Runs scheduled at or after T: RFC 3339, or a duration ago such as 7d' -r
complete -c pacer -n "__fish_pacer_using_subcommand stats" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand stats" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand stats" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand stats" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand check" -l next -d 'How many fires to list per job' -r
complete -c pacer -n "__fish_pacer_using_subcommand check" -l from -d 'List fires strictly after T (RFC 3339, or a duration ago); default: now' -r
complete -c pacer -n "__fish_pacer_using_subcommand check" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand check" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand check" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand check" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand plugins" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand plugins" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand plugins" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand plugins" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand status" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand status" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand status" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand run" -l params -d 'JSON object merged over the job\'s params' -r
complete -c pacer -n "__fish_pacer_using_subcommand run" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand run" -l wait -d 'Wait for the run (and its retries) to end; exit 0 only if it succeeded'
complete -c pacer -n "__fish_pacer_using_subcommand run" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand run" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand run" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand cancel" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand cancel" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand cancel" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand cancel" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand pause" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand pause" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand pause" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand pause" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand resume" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand resume" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand resume" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand resume" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand reload" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand reload" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand reload" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand reload" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand nodes" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand nodes" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand nodes" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand nodes" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand why" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand why" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand why" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand why" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand completions" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand completions" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pacer -n "__fish_pacer_using_subcommand completions" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand manual" -l config -d 'The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand manual" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand manual" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand manual" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "history" -d 'Runs, newest first'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "show" -d 'One run in full, with its captured output'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "jobs" -d 'Every job: schedule, zone, plugin, next fire, last status'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "stats" -d 'Per job: runs, success rate, duration and lateness percentiles'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "check" -d 'Validate the config and each job\'s params; print each job\'s next fires'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "plugins" -d 'Plugins found: name, version, ABI version, path, state'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "status" -d 'Whether pacerd runs, and how loaded it is'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "run" -d 'Start a run now (trigger `manual`), through the job\'s policies'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "cancel" -d 'Stop a running run (recorded `cancelled`)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "pause" -d 'Stop firing a job (survives restarts)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "resume" -d 'Fire a paused job again'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "reload" -d 'Re-read the config (like SIGHUP) and report the outcome'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "nodes" -d 'With [cluster]: every node, its state, last heartbeat, clock offset, runs in flight and config drift'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "why" -d 'A job\'s recent fires and what became of each, and its next fire'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "completions" -d 'Print a shell completion script'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "manual" -d 'Write every man page (roff) into DIR, for packaging'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from history show jobs stats check plugins status run cancel pause resume reload nodes why completions manual help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
