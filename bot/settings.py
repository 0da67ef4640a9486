"""The bot's settings: `BOT_TOKEN` (no prefix) and `CASTFINDER_*`, from the environment or `.env`.

The engine reads its own settings (`core.Settings`) from the same places; this class holds only
what the Telegram side needs. Every field is documented in `docs/BOT.md` and `.env.example`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Telegram's own ceilings: an album holds 2-10 media; `/topk` is capped so that one answer is
# at most two albums and a text message that fits in 4096 characters.
MAX_TOPK = 20
ALBUM_MAX = 10
# The most results kept per query (CASTFINDER_MAX_RESULTS); also bounds a "More" button's offset.
MAX_RESULTS_CAP = 500


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CASTFINDER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        allow_inf_nan=False,  # every number has a finite range (core.settings.load_settings)
    )

    # The token from @BotFather. Optional here so that `run()` can explain how to set it
    # instead of failing with a validation error.
    bot_token: SecretStr | None = Field(default=None, validation_alias="BOT_TOKEN")
    # Another Bot API server, e.g. a local `telegram-bot-api` (http://localhost:8081).
    telegram_api_base: str | None = None
    # That server runs with `--local`: files are read from its disk and may exceed 20 MB.
    telegram_api_local: bool = False
    admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    db_path: Path = Path("data/castfinder.sqlite3")
    # PostgreSQL for bot processes on several hosts (postgresql://user:password@host:port/db);
    # empty: the SQLite file at db_path. A secret: the password is never logged or shown.
    database_url: SecretStr | None = None

    # Engine threads shared by all chats = queries searched at the same time.
    query_workers: int = Field(default=2, ge=1, le=64)
    # A Ray cluster whose engine workers (`castfinder engines`) hold the models and answer the
    # searches; empty: the engine runs in the bot's own process (the default).
    engine_ray_address: str = ""
    # Queries allowed to wait for a worker; beyond that users are told to come back later.
    queue_size: int = Field(default=20, ge=0, le=1000)
    # Queries per minute per user; 0 turns the limit off.
    user_rate: int = Field(default=6, ge=0, le=600)
    # Messages and button taps per minute per user that the bot answers (0 = no limit): beyond
    # that a flood is answered once, then ignored until the minute has passed.
    user_message_rate: int = Field(default=30, ge=0, le=600)
    # Queries one user may have running or queued at once.
    user_max_active: int = Field(default=1, ge=1, le=100)
    # How long to wait for the rest of an album after its last part arrived.
    album_wait_s: float = Field(default=1.0, gt=0, le=30)
    default_topk: int = Field(default=5, ge=1, le=MAX_TOPK)
    # Results kept per query for the "More" button.
    max_results: int = Field(default=50, ge=1, le=MAX_RESULTS_CAP)
    results_ttl_days: float = Field(default=7.0, gt=0, le=365)
    # Minimum seconds between two edits of the status message (Telegram's flood limits).
    status_interval_s: float = Field(default=2.0, ge=0, le=60)
    max_download_mb: int = Field(default=20, ge=1, le=2000)
    # On shutdown, how long running queries may take to finish before they are cancelled.
    shutdown_grace_s: float = Field(default=20.0, ge=0, le=600)
    log_level: str = "INFO"

    @field_validator("bot_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("telegram_api_base", mode="before")
    @classmethod
    def _blank_base_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().rstrip("/")
            return value or None
        return value

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, int):
            return frozenset({value})
        if isinstance(value, str):
            parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
            try:
                return frozenset(int(p) for p in parts)
            except ValueError:
                raise ValueError(
                    "CASTFINDER_ADMIN_IDS is a comma-separated list of numeric Telegram user ids, "
                    "e.g. 12345678,87654321"
                ) from None
        return value

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.strip().upper()

    @property
    def max_download_bytes(self) -> int:
        return self.max_download_mb * 1024 * 1024

    def database(self) -> Path | str:
        """What the bot's Storage opens: CASTFINDER_DATABASE_URL if set, else CASTFINDER_DB_PATH.
        An unknown scheme raises DatabaseUrlError (one line, password masked)."""
        from .services.storage_backend import database_target

        url = self.database_url.get_secret_value() if self.database_url is not None else None
        return database_target(url, self.db_path)

    def token(self) -> str:
        if self.bot_token is None:
            raise RuntimeError("BOT_TOKEN is not set")
        return self.bot_token.get_secret_value()
