"""`TORTOISE_ORM` for Tortoise's own CLI (makemigrations, history), from the settings."""

from kit.settings import get_settings
from models.config import tortoise_config

TORTOISE_ORM = tortoise_config(get_settings())
