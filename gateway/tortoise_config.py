"""`TORTOISE_ORM` for Tortoise's own CLI (makemigrations, history), from the settings."""

from gateway.settings import get_settings

TORTOISE_ORM = get_settings().tortoise_config()
