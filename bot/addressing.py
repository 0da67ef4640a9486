"""Is a message meant for this bot, and does its caption name a movie?

Groups run with Telegram's privacy mode on: the bot sees commands, replies to its own messages
and mentions. A plain photo in a group is somebody else's conversation and is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiogram.types import Message

# Commands whose argument, in a caption, is the movie to search.
MOVIE_COMMANDS = frozenset({"movie", "find", "search"})

_COMMAND = re.compile(r"^/(?P<name>[A-Za-z0-9_]{1,32})(?:@(?P<mention>[A-Za-z0-9_]{3,32}))?(?:\s+(?P<args>.*))?$", re.S)


@dataclass(frozen=True)
class CaptionIntent:
    addressed: bool  # explicitly meant for this bot (own command or mention)
    for_other_bot: bool  # a command addressed to another bot: ignore the message
    movie: str | None  # the movie named in the caption, if any
    explicit: bool  # the movie came from a command or a mention (not free text)


NO_CAPTION = CaptionIntent(False, False, None, False)


def parse_caption(caption: str | None, bot_username: str | None) -> CaptionIntent:
    text = (caption or "").strip()
    if not text:
        return NO_CAPTION
    me = (bot_username or "").casefold()
    match = _COMMAND.match(text)
    if match:
        mention = (match["mention"] or "").casefold()
        if mention and mention != me:
            return CaptionIntent(False, True, None, False)
        args = " ".join((match["args"] or "").split()) or None
        if match["name"].casefold() in MOVIE_COMMANDS:
            return CaptionIntent(True, False, args, args is not None)
        return CaptionIntent(True, False, None, False)
    if me:
        pattern = re.compile(rf"(?<![\w@])@{re.escape(me)}\b", re.IGNORECASE)
        if pattern.search(text):
            rest = " ".join(pattern.sub(" ", text).split()) or None
            return CaptionIntent(True, False, rest, rest is not None)
    return CaptionIntent(False, False, " ".join(text.split()), False)


def is_reply_to_bot(message: Message, bot_id: int) -> bool:
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.id == bot_id)


def album_caption(messages: list[Message]) -> str | None:
    """Telegram puts an album's caption on one of its parts, usually the first."""
    return next((m.caption for m in messages if m.caption and m.caption.strip()), None)
