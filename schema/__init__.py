"""The GraphQL surface: strawberry types per area, merged into one schema by `build.py`."""
