"""The CLI's subcommands, one module per command family; ``cli.py`` adds them."""
