"""One module per `plumb` subcommand: parse options, call the core, print."""
