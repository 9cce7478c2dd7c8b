"""One module per ``carebus`` subcommand (see ``carebus.cli.COMMANDS``)."""
