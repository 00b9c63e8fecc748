"""The `harness` command's sub-commands that compose several stages (cli.py parses and dispatches).
Commands sit on the top floor: they import stages, and no stage imports a command."""
