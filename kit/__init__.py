"""The ground every layer stands on: imports no project package."""
