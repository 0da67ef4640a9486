"""The bot's settings: `BOT_TOKEN` (no prefix) and `CASTFINDER_*`, from the environment or `.env`.

The engine reads its own settings (`core.Settings`) from the same places; this class holds only
what the Telegram side needs. Every field is documented in `docs/BOT.md` and `.env.example`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
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

    # -- several processes (docs/BOT.md "Webhook mode and several processes") --------------
    # Webhook mode instead of long polling: the public https URL Telegram posts updates to.
    webhook_url: str | None = None
    # host:port the webhook server listens on (behind the TLS-terminating proxy).
    webhook_listen: str = "127.0.0.1:8080"
    # The X-Telegram-Bot-Api-Secret-Token every webhook request must carry. Unset: derived from
    # the bot token, so that every process of one bot agrees without being told.
    webhook_secret: SecretStr | None = None
    # Call deleteWebhook when this process stops (off: with several processes one stopping must
    # not cut off the others).
    webhook_delete_on_stop: bool = False
    # Drop the updates Telegram holds when the webhook is set (a fresh start).
    webhook_drop_pending: bool = False
    # Redis shared by the bot's processes (rate limits, busy users, albums): redis://host:6379/0.
    # Unset: all of that lives in this process (one process per bot).
    redis_url: SecretStr | None = None
    # `module:function` returning the engine the bot uses instead of loading castfinder's own
    # (another engine front, or the tests' stand-in). Unset: the engine, models loaded in-process.
    bot_engine: str | None = None

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

    @field_validator("webhook_url", "webhook_secret", "redis_url", "bot_engine", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("bot_engine")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError(f"expected module:function, e.g. mypackage.engines:make, not {value!r}")
        return value

    @field_validator("webhook_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        listen_address(value.strip())
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _secret_charset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("the webhook secret is 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_https(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"expected a full URL like https://bot.example.org/tg, not {url!r}")
        if parts.scheme == "http" and not info.data.get("telegram_api_base"):
            # Telegram's servers post only to https; a local telegram-bot-api server also posts to http.
            raise ValueError("the webhook URL must start with https:// (Telegram posts updates only over TLS); "
                             "http:// works only with a local Bot API server (CASTFINDER_TELEGRAM_API_BASE)")
        return url

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.strip().upper()

    @property
    def max_download_bytes(self) -> int:
        return self.max_download_mb * 1024 * 1024

    @property
    def webhook_path(self) -> str:
        return urlsplit(self.webhook_url or "").path or "/"

    def webhook_secret_token(self) -> str:
        """The secret webhook requests must carry: the configured one, else one derived from the
        bot token (the same in every process of the bot, unguessable without the token)."""
        if self.webhook_secret is not None:
            return self.webhook_secret.get_secret_value()
        return hmac.new(self.token().encode(), b"castfinder webhook secret", hashlib.sha256).hexdigest()

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


_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def listen_address(value: str) -> tuple[str, int]:
    """`host:port` (`[::1]:8080` for IPv6) as a pair, or ValueError saying what is expected."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:8080, not {value!r}")
    return host, int(port)
