"""The `edgepipe` command: main.py parses and dispatches, commands.py holds what each command does."""
