"""Domain logic: one module per area, plain async functions taking a Context.

Nothing here imports strawberry or `schema/`; HTTP routes call these same functions.
"""
