"""The error a user can cause in a config, and fix by changing one field."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-fixable config mistake; the message is one line naming the field and the fix.

    Raised where the input enters (config checks, data split settings), before anything heavy starts;
    a job run by hand prints it and exits with status 2, a sweep reports it for every bad point.
    """
