"""The push node's HTML pages (chat, console, ops), installed as this package's data (pyproject.toml)."""
