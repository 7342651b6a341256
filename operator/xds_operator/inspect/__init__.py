"""The commands that look at what the control plane serves: proxy-status, explain, config-dump, diff.

A CLI-level package: it may import any layer; nothing below the CLI imports it.
"""

from .commands import add_commands

__all__ = ["add_commands"]
