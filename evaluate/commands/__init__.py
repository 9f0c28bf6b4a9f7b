"""Thin CLI entry modules for grouped subcommands whose code lives elsewhere (one module per subcommand)."""
