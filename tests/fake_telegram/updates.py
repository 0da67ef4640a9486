"""Builders for the update dicts Telegram would deliver to the bot.

They produce plain JSON-like dicts (exactly what getUpdates returns), so the
bot under test parses them with aiogram's own models.  Builders that need ids
or files take the :class:`FakeTelegramServer` so that message ids come from the
same per-chat counter as the bot's own messages and photos/documents are
downloadable through getFile.
"""

from __future__ import annotations

import copy
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeTelegramServer

__all__ = [
    "callback_update",
    "command_entities",
    "edited_message_update",
    "group_chat",
    "message_update",
    "private_chat",
    "user",
]

JSONDict = dict[str, Any]

# A command is only recognised at the very start, optionally addressed to a bot.
_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?=\s|$)")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def user(
    user_id: int,
    first_name: str = "Ann",
    username: str | None = None,
    *,
    last_name: str | None = None,
    language_code: str | None = "en",
) -> JSONDict:
    """A human ``User`` object."""
    result: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
    if last_name is not None:
        result["last_name"] = last_name
    if username is not None:
        result["username"] = username
    if language_code is not None:
        result["language_code"] = language_code
    return result


def private_chat(user_id: int, first_name: str = "Ann", username: str | None = None) -> JSONDict:
    """The private ``Chat`` between the bot and ``user_id`` (chat id == user id)."""
    chat: JSONDict = {"id": user_id, "type": "private", "first_name": first_name}
    if username is not None:
        chat["username"] = username
    return chat


def group_chat(chat_id: int, title: str = "Film club") -> JSONDict:
    """A supergroup ``Chat``; Telegram group ids are always negative."""
    if chat_id >= 0:
        raise ValueError(f"group chat ids are negative in Telegram, got {chat_id}")
    return {"id": chat_id, "type": "supergroup", "title": title}


def command_entities(text: str | None) -> list[JSONDict]:
    """The ``bot_command`` entity Telegram adds when ``text`` starts with a command."""
    if not text:
        return []
    match = _COMMAND_RE.match(text)
    if match is None:
        return []
    return [{"type": "bot_command", "offset": 0, "length": _utf16_len(match.group(0))}]


def _quoted(server: FakeTelegramServer, message: JSONDict) -> JSONDict:
    # Prefer the server's current copy: the bot may have edited it since.
    key = (int(message["chat"]["id"]), int(message["message_id"]))
    current = copy.deepcopy(server.messages.get(key, message))
    current.pop("reply_to_message", None)  # Telegram nests replies one level only
    return current


def message_update(
    server: FakeTelegramServer,
    *,
    chat: JSONDict,
    from_user: JSONDict,
    text: str | None = None,
    caption: str | None = None,
    photo_bytes: bytes | None = None,
    document_bytes: bytes | None = None,
    document_name: str | None = None,
    mime_type: str | None = None,
    media_group_id: str | None = None,
    reply_to: JSONDict | None = None,
    entities: list[JSONDict] | None = None,
    date: int | None = None,
) -> JSONDict:
    """An update carrying a new incoming message (not yet pushed).

    The message gets the next id of ``chat`` and is stored in
    ``server.messages`` right away, so the bot can reply to it.  ``entities``
    apply to the caption when the message is a photo/document; without them a
    leading ``/command`` gets its ``bot_command`` entity automatically.
    """
    if text is not None and (photo_bytes is not None or document_bytes is not None):
        raise ValueError("a media message has a caption, not text")
    message: JSONDict = {
        "message_id": server.allocate_message_id(int(chat["id"])),
        "from": copy.deepcopy(from_user),
        "chat": copy.deepcopy(chat),
        "date": int(time.time()) if date is None else date,
    }
    if media_group_id is not None:
        message["media_group_id"] = media_group_id
    if reply_to is not None:
        message["reply_to_message"] = _quoted(server, reply_to)
    if photo_bytes is not None:
        message["photo"] = server.add_photo(photo_bytes)
    if document_bytes is not None:
        message["document"] = server.add_document(
            document_bytes, file_name=document_name, mime_type=mime_type
        )
    if text is not None:
        message["text"] = text
        text_entities = command_entities(text) if entities is None else entities
        if text_entities:
            message["entities"] = text_entities
    if caption is not None:
        message["caption"] = caption
        caption_entities = command_entities(caption) if entities is None else entities
        if caption_entities:
            message["caption_entities"] = caption_entities
    server.store_message(message)
    return {"message": message}


def edited_message_update(
    server: FakeTelegramServer,
    message: JSONDict,
    *,
    text: str | None = None,
    caption: str | None = None,
) -> JSONDict:
    """An ``edited_message`` update: the user changed text/caption of ``message``."""
    edited = copy.deepcopy(message)
    if text is not None:
        edited["text"] = text
        edited.pop("entities", None)
        if found := command_entities(text):
            edited["entities"] = found
    if caption is not None:
        edited["caption"] = caption
        edited.pop("caption_entities", None)
        if found := command_entities(caption):
            edited["caption_entities"] = found
    edited["edit_date"] = int(time.time())
    server.store_message(edited)
    return {"edited_message": edited}


def callback_update(
    server: FakeTelegramServer,
    *,
    chat: JSONDict,
    from_user: JSONDict,
    message: JSONDict,
    data: str,
) -> JSONDict:
    """A ``callback_query`` for a button pressed under ``message`` in ``chat``.

    The query id is registered with the server, so answerCallbackQuery with it
    succeeds while made-up ids are rejected like Telegram does.
    """
    chat_id = int(chat["id"])
    key = (chat_id, int(message["message_id"]))
    current = copy.deepcopy(server.messages.get(key, message))
    return {
        "callback_query": {
            "id": server.new_callback_query_id(),
            "from": copy.deepcopy(from_user),
            "message": current,
            # Stable per chat, opaque and signed in Telegram; only equality matters.
            "chat_instance": str(-(abs(chat_id) * 7919 + 4_242_424_242)),
            "data": data,
        }
    }
