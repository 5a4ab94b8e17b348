"""One module per `qexit` subcommand: HELP, add_arguments(parser), run(args) -> int."""
