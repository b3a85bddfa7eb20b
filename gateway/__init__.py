"""Switchboard's shell (app factory, HTTP routes, CLI) and leaf modules every layer may use."""
