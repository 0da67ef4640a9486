"""A fake Telegram Bot API server plus update builders for end-to-end tests."""

from .server import Call, FakeTelegramServer, parse_formatted_text
from .updates import (
    callback_update,
    command_entities,
    edited_message_update,
    group_chat,
    message_update,
    private_chat,
    user,
)

__all__ = [
    "Call",
    "FakeTelegramServer",
    "callback_update",
    "command_entities",
    "edited_message_update",
    "group_chat",
    "message_update",
    "parse_formatted_text",
    "private_chat",
    "user",
]
