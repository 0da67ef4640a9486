"""An in-process fake of the Telegram Bot API for end-to-end tests.

The server speaks real HTTP on 127.0.0.1 so that a genuine ``aiogram.Bot`` with
its stock ``AiohttpSession`` can talk to it unchanged.  It keeps just enough
state (messages per chat, uploaded files, the update queue) to answer the way
Telegram does, including the error descriptions bots commonly branch on
("message is not modified", "retry after N", "bot was blocked by the user" ...).

Everything the bot sends is recorded as a :class:`Call`; tests synchronise on
those recordings with :meth:`FakeTelegramServer.wait_for` /
:meth:`FakeTelegramServer.wait_until`, which are event driven (no sleeps).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import mimetypes
import re
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

if TYPE_CHECKING:
    from aiogram import Dispatcher

__all__ = ["Call", "FakeTelegramServer"]

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]

#: Methods that are polled constantly; keeping them out of ``calls`` keeps the
#: interesting traffic (what the bot *did*) readable in assertions and dumps.
NOISE_METHODS: Final[frozenset[str]] = frozenset({"getUpdates", "getMe"})

#: Telegram refuses getFile for anything bigger than this (Bot API limit).
MAX_DOWNLOAD_SIZE: Final[int] = 20 * 1024 * 1024
#: Upload ceiling of the public Bot API; bigger bodies are answered with 413.
MAX_UPLOAD_SIZE: Final[int] = 50 * 1024 * 1024

MAX_TEXT_LENGTH: Final[int] = 4096
MAX_CAPTION_LENGTH: Final[int] = 1024
#: answerCallbackQuery's text: 0-200 characters.
MAX_CALLBACK_ANSWER_LENGTH: Final[int] = 200

#: Update types Telegram leaves out unless they are explicitly requested.
_OPT_IN_UPDATE_TYPES: Final[frozenset[str]] = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)

_CHAT_ACTIONS: Final[frozenset[str]] = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

#: Form fields that are plain strings in the Bot API.  Every other form field is
#: JSON-decoded, because aiogram (like Telegram itself) transports integers,
#: booleans, arrays and objects as JSON text inside form fields.
_STRING_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "action",
        "language_code",
        "file_id",
        "photo",
        "document",
        "video",
        "audio",
        "animation",
        "voice",
        "video_note",
        "sticker",
        "thumbnail",
        "description",
        "short_description",
        "name",
        "title",
        "emoji",
        "business_connection_id",
        "message_effect_id",
        "question",
        "inline_query_id",
        "next_offset",
        "secret_token",
        "ip_address",
        "custom_emoji_id",
        "payload",
        "currency",
        "first_name",
        "last_name",
        "phone_number",
        "vcard",
        "address",
    }
)

_MEDIA_KINDS: Final[tuple[str, ...]] = ("photo", "video", "animation", "audio", "voice", "document")
#: Types an InputMedia may have (editMessageMedia); voice notes cannot be swapped in.
_INPUT_MEDIA_KINDS: Final[tuple[str, ...]] = ("photo", "video", "animation", "audio", "document")

_COMMAND_RE: Final[re.Pattern[str]] = re.compile(r"^[a-z0-9_]{1,32}$")


# --------------------------------------------------------------------------- #
# Public records
# --------------------------------------------------------------------------- #


@dataclass
class Call:
    """One request the bot made to the fake server.

    ``params`` holds decoded values: form fields that carry JSON in the Bot API
    (``chat_id``, ``reply_markup``, ``media``, ``reply_parameters`` ...) are
    JSON-decoded, free-text fields (``text``, ``caption`` ...) stay strings.
    ``files`` maps multipart part names to the uploaded bytes.
    """

    method: str
    params: JSONDict
    files: dict[str, bytes] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)
    response: JSONDict | None = None
    status: int = 200
    failed: bool = False

    @property
    def result(self) -> Any:
        """The ``result`` of a successful response (``None`` otherwise)."""
        return None if self.response is None else self.response.get("result")

    def summary(self, width: int = 160) -> str:
        """One-line rendering used in timeout diagnostics."""
        text = json.dumps(self.params, ensure_ascii=False, default=str)
        if len(text) > width:
            text = text[: width - 3] + "..."
        files = f" files={sorted(self.files)}" if self.files else ""
        outcome = "ok" if not self.failed else f"FAILED {self.status}: " + str(
            (self.response or {}).get("description")
        )
        return f"{self.method} {text}{files} -> {outcome}"


# --------------------------------------------------------------------------- #
# Internals
# --------------------------------------------------------------------------- #


class _ApiError(Exception):
    """Raised inside handlers; becomes a Bot API error response."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> JSONDict:
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad_request(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


class _Signal:
    """Broadcast wake-up that can be fired from synchronous code.

    ``asyncio.Condition.notify`` needs the lock held, which sync entry points
    such as :meth:`FakeTelegramServer.push_update` cannot take.  Handing out a
    fresh Event per generation gives the same "wake every waiter" semantics.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    file_size: int
    file_path: str
    #: The object exactly as it appears inside messages (PhotoSize, Document ...).
    obj: JSONDict
    kind: str
    #: For photos: the whole PhotoSize list this size belongs to.
    photo_group: list[JSONDict] | None = None


@dataclass
class _Failure:
    status: int
    description: str
    parameters: JSONDict | None


@dataclass
class _InputFile:
    """A file referenced by a request: fresh bytes or an already known file."""

    data: bytes
    filename: str | None
    existing: _StoredFile | None = None


def _utf16_len(text: str) -> int:
    # Telegram measures offsets and lengths in UTF-16 code units.
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    # ... but reports parse errors at UTF-8 byte offsets.
    return len(text[:index].encode("utf-8"))


def _decode_field(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        # e.g. chat_id="@channelname" - legitimately a plain string.
        return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1"}
    return bool(value)


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Sniff width/height of PNG, GIF or JPEG bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        index = 2
        while index + 9 < len(data):
            if data[index] != 0xFF:
                index += 1
                continue
            marker = data[index + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[index + 5 : index + 9])
                return int(width), int(height)
            (segment,) = struct.unpack(">H", data[index + 2 : index + 4])
            index += 2 + int(segment)
    return None


# --------------------------------------------------------------------------- #
# Formatting (parse_mode) - so bots get the same entities / parse errors
# --------------------------------------------------------------------------- #


class _TextBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0  # UTF-16 units

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += _utf16_len(text)

    def text(self) -> str:
        return "".join(self.parts)


#: Telegram orders entities by offset, then longest first, then by this rank.
_ENTITY_RANK: Final[dict[str, int]] = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}


def _sorted_entities(entities: list[JSONDict]) -> list[JSONDict]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], _ENTITY_RANK.get(e["type"], 50)))


def _parse_error(message: str) -> _ApiError:
    return _bad_request(f"can't parse entities: {message}")


_HTML_SIMPLE_TAGS: Final[dict[str, str]] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
}
_HTML_TAGS: Final[frozenset[str]] = frozenset(
    {*_HTML_SIMPLE_TAGS, "a", "span", "blockquote", "tg-emoji"}
)
# Named entities need no ';' in Telegram ("&lt3" is "<3"); numeric ones do.
_HTML_ENTITY_RE: Final[re.Pattern[str]] = re.compile(
    r"&(?:(lt|gt|amp|quot);?|#([0-9]{1,7});|#x([0-9a-fA-F]{1,6});)"
)
_HTML_SPACE: Final[str] = " \t\r\n"


def _html_unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        named, decimal, hexadecimal = match.groups()
        if named:
            return {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}[named]
        code = int(decimal) if decimal else int(hexadecimal, 16)
        return chr(code) if code <= 0x10FFFF else match.group(0)

    return _HTML_ENTITY_RE.sub(replace, text)


def _html_start_tag(source: str, begin: int) -> tuple[str, dict[str, str], int]:
    """Tokenise ``<name attr=value ...>`` at ``begin``; return name, attrs, index after '>'.

    Follows Telegram's tokenizer so malformed markup fails with the same
    descriptions (offsets are UTF-8 byte offsets of the tag start).
    """
    offset = _byte_offset(source, begin)
    index = begin + 1
    while index < len(source) and source[index] not in _HTML_SPACE and source[index] != ">":
        index += 1
    if index >= len(source):
        raise _parse_error(f"Unclosed start tag at byte offset {offset}")
    name = source[begin + 1 : index].lower()
    if name not in _HTML_TAGS:
        raise _parse_error(f'Unsupported start tag "{name}" at byte offset {offset}')
    attrs: dict[str, str] = {}
    while index < len(source) and source[index] != ">":
        while index < len(source) and source[index] in _HTML_SPACE:
            index += 1
        if index < len(source) and source[index] == ">":
            break
        attr_begin = index
        while index < len(source) and source[index] not in _HTML_SPACE and source[index] not in "=>":
            index += 1
        attr_name = source[attr_begin:index].lower()
        if not attr_name:
            raise _parse_error(f'Empty attribute name in the tag "{name}" at byte offset {offset}')
        while index < len(source) and source[index] in _HTML_SPACE:
            index += 1
        if index >= len(source):
            raise _parse_error(f'Unclosed start tag "{name}" at byte offset {offset}')
        if source[index] != "=":
            if name == "blockquote" and attr_name == "expandable":
                attrs[attr_name] = ""
                continue
            raise _parse_error(
                f'Expected equal sign in declaration of an attribute of the tag "{name}" '
                f"at byte offset {offset}"
            )
        index += 1
        while index < len(source) and source[index] in _HTML_SPACE:
            index += 1
        if index >= len(source):
            raise _parse_error(f'Unclosed start tag "{name}" at byte offset {offset}')
        if source[index] in "'\"":
            quote = source[index]
            close = source.find(quote, index + 1)
            if close == -1:
                raise _parse_error(f"Unclosed start tag at byte offset {offset}")
            value = _html_unescape(source[index + 1 : close])
            index = close + 1
        else:
            value_begin = index
            while index < len(source) and (source[index].isalnum() or source[index] in ".-"):
                index += 1
            if index >= len(source) or source[index] not in _HTML_SPACE + ">":
                raise _parse_error(
                    f"Unexpected end of name token at byte offset {_byte_offset(source, value_begin)}"
                )
            value = source[value_begin:index]
        attrs[attr_name] = value
    if index >= len(source):
        raise _parse_error(f"Unclosed start tag at byte offset {offset}")
    return name, attrs, index + 1


def _parse_html(source: str) -> tuple[str, list[JSONDict]]:
    """Telegram's HTML parse mode: supported tags, entities and error messages."""
    out = _TextBuilder()
    entities: list[JSONDict] = []
    # (tag name, start offset, entity type or None, extra entity fields)
    stack: list[tuple[str, int, str | None, JSONDict]] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "&":
            match = _HTML_ENTITY_RE.match(source, index)
            if match:
                out.add(_html_unescape(match.group(0)))
                index = match.end()
            else:
                out.add("&")
                index += 1
            continue
        if char != "<":
            nxt = min(
                (pos for pos in (source.find("<", index), source.find("&", index)) if pos != -1),
                default=len(source),
            )
            out.add(source[index:nxt])
            index = nxt
            continue

        offset = _byte_offset(source, index)
        if not source.startswith("</", index):
            name, attrs, index = _html_start_tag(source, index)
            entity_type: str | None = _HTML_SIMPLE_TAGS.get(name)
            extra: JSONDict = {}
            if name == "span":
                if attrs.get("class") != "tg-spoiler":
                    raise _parse_error(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
                entity_type = "spoiler"
            elif name == "a":
                href = attrs.get("href")
                mention = re.fullmatch(r"tg://user\?id=(\d+)", href or "")
                if mention:
                    entity_type = "text_mention"
                    extra = {"user": {"id": int(mention.group(1)), "is_bot": False, "first_name": ""}}
                elif href:
                    entity_type = "text_link"
                    extra = {"url": href}
            elif name == "blockquote":
                entity_type = "expandable_blockquote" if "expandable" in attrs else "blockquote"
            elif name == "tg-emoji":
                entity_type = "custom_emoji"
                extra = {"custom_emoji_id": attrs.get("emoji-id", "")}
            elif name == "code" and stack and stack[-1][0] == "pre":
                # <pre><code class="language-x"> collapses into one pre entity with a language.
                language = attrs.get("class", "")
                if language.startswith("language-") and len(language) > len("language-"):
                    stack[-1][3]["language"] = language.removeprefix("language-")
                    entity_type = None
            stack.append((name, out.length, entity_type, extra))
            continue

        if not stack:
            raise _parse_error(f"Unexpected end tag at byte offset {offset}")
        index += 2
        name_begin = index
        while index < len(source) and source[index] not in _HTML_SPACE and source[index] != ">":
            index += 1
        name = source[name_begin:index].lower()
        while index < len(source) and source[index] in _HTML_SPACE:
            index += 1
        if index >= len(source) or source[index] != ">":
            raise _parse_error(f"Unclosed end tag at byte offset {offset}")
        index += 1
        open_name, start, closed_type, closed_extra = stack.pop()
        if name and name != open_name:
            raise _parse_error(
                f'Unmatched end tag at byte offset {offset}, expected "</{open_name}>", found "</{name}>"'
            )
        if closed_type is not None and out.length > start:
            entities.append(
                {"type": closed_type, "offset": start, "length": out.length - start, **closed_extra}
            )

    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.text(), _sorted_entities(entities)


_MDV2_RESERVED: Final[frozenset[str]] = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_MARKERS: Final[dict[str, tuple[str, str]]] = {
    "*": ("bold", "Bold"),
    "_": ("italic", "Italic"),
    "__": ("underline", "Underline"),
    "~": ("strikethrough", "Strikethrough"),
    "||": ("spoiler", "Spoiler"),
}


def _find_unescaped(source: str, needle: str, start: int) -> int:
    index = start
    while index < len(source):
        if source[index] == "\\":
            index += 2
            continue
        if source.startswith(needle, index):
            return index
        index += 1
    return -1


def _unescape_code(text: str) -> str:
    return re.sub(r"\\([\\`])", r"\1", text)


def _parse_markdown_v2(source: str) -> tuple[str, list[JSONDict]]:
    """MarkdownV2 including the strict 'reserved character' rule."""
    out = _TextBuilder()
    entities: list[JSONDict] = []
    stack: list[tuple[str, int, int]] = []  # marker, text offset, source index
    quote_start: int | None = None
    index = 0
    while index < len(source):
        char = source[index]
        at_line_start = index == 0 or source[index - 1] == "\n"
        if char == "\\":
            # Any ASCII character can be escaped; before anything else the
            # backslash is literal, as Telegram treats it.
            if index + 1 < len(source) and 0 < ord(source[index + 1]) < 127:
                out.add(source[index + 1])
                index += 2
            else:
                out.add("\\")
                index += 1
            continue
        if char == ">" and at_line_start:
            if quote_start is None:
                quote_start = out.length
            index += 1
            continue
        if char == "\n" and quote_start is not None and not source.startswith(">", index + 1):
            if out.length > quote_start:
                entities.append(
                    {"type": "blockquote", "offset": quote_start, "length": out.length - quote_start}
                )
            quote_start = None
        if char == "`":
            fence = "```" if source.startswith("```", index) else "`"
            close = _find_unescaped(source, fence, index + len(fence))
            if close == -1:
                kind = "Pre" if fence == "```" else "Code"
                raise _parse_error(
                    f"Can't find end of {kind} entity at byte offset {_byte_offset(source, index)}"
                )
            body = source[index + len(fence) : close]
            extra: JSONDict = {}
            if fence == "```":
                first_line, newline, rest = body.partition("\n")
                if newline and first_line and " " not in first_line:
                    extra["language"] = first_line
                    body = rest
                elif newline and not first_line:
                    body = rest
            start = out.length
            out.add(_unescape_code(body))
            if out.length > start:
                entities.append(
                    {
                        "type": "pre" if fence == "```" else "code",
                        "offset": start,
                        "length": out.length - start,
                        **extra,
                    }
                )
            index = close + len(fence)
            continue
        marker = None
        if source.startswith("__", index):
            marker = "__"
        elif source.startswith("||", index):
            marker = "||"
        elif char in "*_~":
            marker = char
        if marker is not None:
            if stack and stack[-1][0] == marker:
                _, start, _ = stack.pop()
                if out.length > start:
                    entities.append(
                        {"type": _MDV2_MARKERS[marker][0], "offset": start, "length": out.length - start}
                    )
            else:
                stack.append((marker, out.length, index))
            index += len(marker)
            continue
        if char == "[":
            stack.append(("[", out.length, index))
            index += 1
            continue
        if char == "]" and stack and stack[-1][0] == "[":
            _, start, _ = stack.pop()
            if not source.startswith("(", index + 1):
                index += 1  # "[text]" without a URL is plain text
                continue
            close = _find_unescaped(source, ")", index + 2)
            if close == -1:
                raise _parse_error(
                    f"Can't find end of a URL at byte offset {_byte_offset(source, index + 2)}"
                )
            url = re.sub(r"\\([\\)])", r"\1", source[index + 2 : close])
            if out.length > start:
                entities.append(
                    {"type": "text_link", "offset": start, "length": out.length - start, "url": url}
                )
            index = close + 1
            continue
        if char in _MDV2_RESERVED:
            raise _parse_error(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        out.add(char)
        index += 1

    if quote_start is not None and out.length > quote_start:
        entities.append({"type": "blockquote", "offset": quote_start, "length": out.length - quote_start})
    if stack:
        marker, _, src_index = stack[-1]
        name = "TextUrl" if marker == "[" else _MDV2_MARKERS[marker][1]
        raise _parse_error(
            f"Can't find end of {name} entity at byte offset {_byte_offset(source, src_index)}"
        )
    return out.text(), _sorted_entities(entities)


def _parse_markdown_legacy(source: str) -> tuple[str, list[JSONDict]]:
    """Legacy 'Markdown': *bold* _italic_ `code` ```pre``` [text](url), no nesting."""
    out = _TextBuilder()
    entities: list[JSONDict] = []
    simple = {"*": "bold", "_": "italic"}
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\" and index + 1 < len(source) and source[index + 1] in "*_`[":
            out.add(source[index + 1])
            index += 2
            continue
        if char in simple or char == "`":
            fence = "```" if source.startswith("```", index) else char
            close = source.find(fence, index + len(fence))
            if close == -1:
                raise _parse_error(
                    "Can't find end of the entity starting at byte offset "
                    f"{_byte_offset(source, index)}"
                )
            start = out.length
            out.add(source[index + len(fence) : close])
            if out.length > start:
                entity_type = simple.get(char) or ("pre" if fence == "```" else "code")
                entities.append({"type": entity_type, "offset": start, "length": out.length - start})
            index = close + len(fence)
            continue
        if char == "[":
            match = re.compile(r"\[([^\]]*)\]\(([^)]*)\)").match(source, index)
            if match:
                start = out.length
                out.add(match.group(1))
                if out.length > start:
                    entities.append(
                        {"type": "text_link", "offset": start, "length": out.length - start,
                         "url": match.group(2)}
                    )
                index = match.end()
                continue
        out.add(char)
        index += 1
    return out.text(), entities


def parse_formatted_text(text: str, parse_mode: str) -> tuple[str, list[JSONDict]]:
    """Turn ``text`` in ``parse_mode`` into (plain text, entities) like Telegram.

    Raises the same 400 "can't parse entities" errors Telegram would, so bots
    that forget to escape user input (film titles with ``<`` or ``.``) fail in
    tests as they would in production.
    """
    mode = parse_mode.lower()
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _parse_markdown_v2(text)
    if mode == "markdown":
        return _parse_markdown_legacy(text)
    raise _bad_request("unsupported parse_mode")


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #

_Handler = Callable[[Call], Awaitable[Any]]


class _LoopbackAiohttpSession(AiohttpSession):
    """AiohttpSession minus the 250 ms grace period in ``close()``.

    aiogram sleeps there so TLS transports can shut down; the fake speaks
    plain HTTP on loopback, and every bot shutdown in every test would
    otherwise pay that quarter second.  Requests are untouched.
    """

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class FakeTelegramServer:
    """A fake Telegram Bot API reachable over real HTTP.

    Typical use::

        async with FakeTelegramServer() as tg:
            bot = tg.make_bot()
            async with tg.run_polling(dp, bot):
                tg.push_update(message_update(tg, chat=..., from_user=..., text="/start"))
                [call] = await tg.wait_for("sendMessage")
    """

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token",
        bot_id: int = 123456,
        bot_username: str = "castfinder_test_bot",
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_first_name = "CastFinder Test"
        self.base_url = ""

        # Recordings -----------------------------------------------------
        self.all_calls: list[Call] = []
        self.calls: list[Call] = []
        #: Exceptions raised by the fake itself (answered with HTTP 500).
        self.server_errors: list[BaseException] = []
        #: file_path of every file the bot downloaded.
        self.downloads: list[str] = []
        #: Requests Telegram refused because the bot broke one of its size limits (a text over
        #: 4096 characters, a caption over 1024, a callback answer over 200, callback data over
        #: 64 bytes): answered with Telegram's 400 like the real thing, and recorded so that a
        #: test harness can fail any test whose bot made one (see tests/bot_support.py).
        self.limit_violations: list[str] = []

        # Chat state ------------------------------------------------------
        self.messages: dict[tuple[int, int], JSONDict] = {}
        #: Messages sent via inline mode, editable by inline_message_id.
        self.inline_messages: dict[str, JSONDict] = {}
        self.deleted_messages: list[tuple[int, int]] = []
        self.chats: dict[int, JSONDict] = {}
        self.blocked_chats: set[int] = set()
        #: callback_query_id -> answerCallbackQuery params (None = not answered yet).
        self.callback_answers: dict[str, JSONDict | None] = {}
        self._message_ids: dict[int, int] = {}
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}

        # Files -----------------------------------------------------------
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._url_files: dict[str, bytes] = {}
        self._file_counter = itertools.count(1)
        self._media_group_counter = itertools.count(13_000_000_000_001)
        self._callback_counter = itertools.count(4_400_000_000_000_001)

        # Updates ---------------------------------------------------------
        self.pending_updates: list[JSONDict] = []
        #: Updates Telegram would never deliver (type not in allowed_updates).
        self.dropped_updates: list[JSONDict] = []
        self._next_update_id = 100_000_001
        self._allowed_updates: frozenset[str] | None = None
        #: The URL of the last setWebhook ("" when none or deleted).
        self.webhook_url = ""

        # Failure injection --------------------------------------------------
        self._failures: dict[str, list[_Failure]] = {}
        self._download_failures: list[int] = []

        # Plumbing ----------------------------------------------------------
        self._calls_signal = _Signal()
        self._updates_signal = _Signal()
        self._get_updates_started = 0
        self._polls_in_flight = 0
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, tuple[str, _Handler]] = {}
        for name, handler in self._handler_table().items():
            self._handlers[name.lower()] = (name, handler)

    # ------------------------------------------------------------------ #
    # Lifecycle
    # ------------------------------------------------------------------ #

    async def start(self) -> None:
        """Listen on 127.0.0.1 with an OS-assigned port and set :attr:`base_url`."""
        if self._runner is not None:
            raise RuntimeError("FakeTelegramServer is already running")
        self._closing = False
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation: a long poll whose client went away must not
        # linger (and must not swallow updates meant for the next poller).
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Release pending long polls and shut the HTTP server down."""
        if self._runner is None:
            return
        self._closing = True
        self._updates_signal.notify()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeTelegramServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def api_server(self) -> TelegramAPIServer:
        if not self.base_url:
            raise RuntimeError("start() the server before asking for its address")
        return TelegramAPIServer.from_base(self.base_url)

    def make_session(self) -> AiohttpSession:
        """An AiohttpSession aimed at this server (for hand-built Bots)."""
        return _LoopbackAiohttpSession(api=self.api_server())

    def make_bot(self, **kwargs: Any) -> Bot:
        """A real aiogram Bot whose stock aiohttp session points at this server."""
        return Bot(self.token, session=self.make_session(), **kwargs)

    @asynccontextmanager
    async def run_polling(
        self, dispatcher: Dispatcher, bot: Bot, *, startup_timeout: float = 10.0, **kwargs: Any
    ) -> AsyncIterator[asyncio.Task[None]]:
        """Run ``dispatcher.start_polling(bot)`` for the duration of the block.

        Entering waits until the dispatcher has actually issued getUpdates, so
        ``dispatcher.stop_polling()`` cannot race its start-up.  Leaving first
        lets in-flight handler tasks finish (their API calls would otherwise
        hit a closed session), then stops polling and awaits the task so no
        "Task was destroyed" warnings or open sessions leak out of the test.
        """
        seen = self._get_updates_started
        task = asyncio.create_task(dispatcher.start_polling(bot, handle_signals=False, **kwargs))

        async def first_poll() -> None:
            while self._get_updates_started == seen:
                await self._calls_signal.wait()

        started = False
        try:
            waiter = asyncio.ensure_future(first_poll())
            done, _ = await asyncio.wait(
                {waiter, task}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if task in done:
                task.result()  # surface start-up failures
                raise AssertionError("dispatcher polling ended before its first getUpdates")
            if waiter not in done:
                raise AssertionError(
                    f"dispatcher did not call getUpdates within {startup_timeout}s\n{self.describe()}"
                )
            started = True
            yield task
        finally:
            if started:
                handler_tasks = set(getattr(dispatcher, "_handle_update_tasks", ()))
                if handler_tasks:
                    await asyncio.wait(handler_tasks, timeout=startup_timeout)
            if not task.done():
                if started:
                    await dispatcher.stop_polling()
                else:
                    task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ #
    # Test-facing helpers
    # ------------------------------------------------------------------ #

    def bot_user(self) -> JSONDict:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def calls_of(self, method: str) -> list[Call]:
        """All recorded calls of ``method`` (case-insensitive), failures included."""
        wanted = method.lower()
        return [call for call in self.all_calls if call.method.lower() == wanted]

    def clear_calls(self) -> None:
        self.all_calls.clear()
        self.calls.clear()

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until ``method`` was called ``count`` times; return those first calls."""
        await self._wait(
            lambda: len(self.calls_of(method)) >= count,
            timeout,
            f"{count} x {method} (seen {{seen}})",
            lambda: len(self.calls_of(method)),
        )
        return self.calls_of(method)[:count]

    async def wait_until(
        self, predicate: Callable[[list[Call]], bool], timeout: float = 10.0
    ) -> None:
        """Wait until ``predicate(self.calls)`` holds, re-checked after every call."""
        await self._wait(lambda: predicate(self.calls), timeout, "predicate", None)

    async def _wait(
        self,
        ready: Callable[[], bool],
        timeout: float,
        what: str,
        seen: Callable[[], int] | None,
    ) -> None:
        async def until_ready() -> None:
            while not ready():
                await self._calls_signal.wait()

        try:
            await asyncio.wait_for(until_ready(), timeout)
        except asyncio.TimeoutError:
            label = what.format(seen=seen()) if seen else what
            raise AssertionError(
                f"Timed out after {timeout}s waiting for {label}.\n{self.describe()}"
            ) from None

    @property
    def polls_in_flight(self) -> int:
        """Number of getUpdates requests currently being held open."""
        return self._polls_in_flight

    async def wait_for_poll(self, timeout: float = 10.0) -> None:
        """Wait until some getUpdates request is in flight (a poller is listening)."""
        await self._wait(lambda: self._polls_in_flight > 0, timeout, "a getUpdates long poll", None)

    def describe(self, last: int = 25) -> str:
        """Human-readable dump of recent traffic for assertion messages."""
        lines = [f"Recent calls (last {last} of {len(self.calls)}):"]
        lines += [f"  {call.summary()}" for call in self.calls[-last:]] or ["  <none>"]
        polls = len(self.calls_of("getUpdates"))
        lines.append(f"getUpdates answered: {polls}; queued updates: {len(self.pending_updates)}")
        if self.dropped_updates:
            lines.append(
                f"dropped by allowed_updates={sorted(self._allowed_updates or [])}: "
                f"{len(self.dropped_updates)}"
            )
        if self.server_errors:
            lines.append(f"FAKE SERVER ERRORS: {self.server_errors!r}")
        return "\n".join(lines)

    def fail_next(
        self,
        method: str,
        *,
        retry_after: int = 1,
        times: int = 1,
        error_code: int = 429,
        description: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error.

        Defaults to Telegram's flood-control answer; ``error_code`` and
        ``description`` allow other errors (e.g. 500, 400) through the same hook.
        """
        if error_code == 429:
            failure = _Failure(
                429,
                description or f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )
        else:
            failure = _Failure(error_code, description or "Internal Server Error", None)
        self._failures.setdefault(method.lower(), []).extend(failure for _ in range(times))

    def fail_next_download(self, status: int = 500, *, times: int = 1) -> None:
        """Answer the next ``times`` file downloads (GET /file/bot<token>/<path>) with HTTP
        ``status`` (404: the file is gone; 500: the file server fails) instead of the bytes."""
        self._download_failures.extend(status for _ in range(times))

    def block_chat(self, chat_id: int) -> None:
        """Make every method addressed to ``chat_id`` fail with 403."""
        self.blocked_chats.add(chat_id)

    def unblock_chat(self, chat_id: int) -> None:
        self.blocked_chats.discard(chat_id)

    def bot_messages(self, chat_id: int | None = None) -> list[JSONDict]:
        """Current state of messages the bot sent (not deleted), oldest first."""
        return [
            message
            for (cid, _), message in sorted(self.messages.items())
            if message.get("from", {}).get("id") == self.bot_id and (chat_id is None or cid == chat_id)
        ]

    def get_commands(self, scope: JSONDict | None = None, language_code: str = "") -> list[JSONDict]:
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    def add_url_file(self, url: str, data: bytes) -> None:
        """Content the fake "downloads" when the bot sends ``url`` as a file."""
        self._url_files[url] = data

    # --- files ---------------------------------------------------------------

    def add_file(
        self,
        data: bytes,
        *,
        file_size: int | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> str:
        """Register a document-like file a user "uploaded"; returns its file_id.

        ``file_size`` overrides the reported size, which lets tests simulate
        files above the 20 MB getFile limit without allocating them.
        """
        document = self.add_document(data, file_name=file_name, mime_type=mime_type, file_size=file_size)
        return str(document["file_id"])

    def add_document(
        self,
        data: bytes,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        file_size: int | None = None,
    ) -> JSONDict:
        """Register a file and return the ``Document`` object describing it."""
        if mime_type is None and file_name:
            mime_type = mimetypes.guess_type(file_name)[0]
        document: JSONDict = {}
        if file_name:
            document["file_name"] = file_name
        if mime_type:
            document["mime_type"] = mime_type
        stored = self._register(
            "document", data, document, file_size=file_size, extension=self._extension(file_name, mime_type)
        )
        return copy.deepcopy(stored.obj)

    def add_photo(self, data: bytes) -> list[JSONDict]:
        """Register a photo; return its ``PhotoSize`` list (largest last)."""
        width, height = _image_size(data) or (1280, 720)
        longest = max(width, height, 1)
        limits = [limit for limit in (90, 320, 800) if longest > limit]
        limits.append(min(longest, 2560))
        group: list[JSONDict] = []
        for position, limit in enumerate(limits):
            scale = limit / longest
            size_w, size_h = max(1, round(width * scale)), max(1, round(height * scale))
            is_full = position == len(limits) - 1
            # Thumbnails are downscaled copies in real Telegram; the fake serves
            # the original bytes for every size but reports plausible sizes.
            reported = len(data) if is_full else max(1, min(len(data) - 1, int(len(data) * scale * scale)))
            stored = self._register(
                "photo", data, {"width": size_w, "height": size_h}, file_size=reported, extension=".jpg"
            )
            stored.photo_group = group
            group.append(stored.obj)
        return copy.deepcopy(group)

    def add_media(
        self, kind: str, data: bytes, *, file_name: str | None = None, mime_type: str | None = None
    ) -> JSONDict:
        """Register a video/animation/audio/voice file; return its API object."""
        defaults: dict[str, JSONDict] = {
            "video": {"width": 1280, "height": 720, "duration": 1, "mime_type": "video/mp4"},
            "animation": {"width": 480, "height": 270, "duration": 1, "mime_type": "video/mp4"},
            "audio": {"duration": 1, "mime_type": "audio/mpeg"},
            "voice": {"duration": 1, "mime_type": "audio/ogg"},
        }
        if kind == "photo":
            raise ValueError("use add_photo() for photos")
        if kind == "document":
            return self.add_document(data, file_name=file_name, mime_type=mime_type)
        obj = dict(defaults[kind])
        if file_name:
            obj["file_name"] = file_name
        if mime_type:
            obj["mime_type"] = mime_type
        stored = self._register(kind, data, obj, extension=self._extension(file_name, obj.get("mime_type")))
        return copy.deepcopy(stored.obj)

    @staticmethod
    def _extension(file_name: str | None, mime_type: str | None) -> str:
        if file_name and "." in file_name:
            return "." + file_name.rsplit(".", 1)[1]
        if mime_type:
            return mimetypes.guess_extension(mime_type) or ""
        return ""

    def _register(
        self,
        kind: str,
        data: bytes,
        obj: JSONDict,
        *,
        file_size: int | None = None,
        extension: str = "",
    ) -> _StoredFile:
        number = next(self._file_counter)
        prefix = {"photo": "AgACAgIAAxkBAAI", "document": "BQACAgIAAxkBAAI"}.get(kind, "BAACAgIAAxkBAAI")
        file_id = f"{prefix}{number:06d}{secrets.token_urlsafe(24)}"
        unique_id = f"AQAD{number:06d}{secrets.token_urlsafe(6)}"
        folder = {"photo": "photos", "document": "documents", "audio": "music"}.get(kind, f"{kind}s")
        size = len(data) if file_size is None else file_size
        full = {"file_id": file_id, "file_unique_id": unique_id, **obj, "file_size": size}
        stored = _StoredFile(
            file_id=file_id,
            file_unique_id=unique_id,
            data=data,
            file_size=size,
            file_path=f"{folder}/file_{number}{extension}",
            obj=full,
            kind=kind,
        )
        self._files[file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    # --- messages and updates -----------------------------------------------

    def allocate_message_id(self, chat_id: int) -> int:
        """Next message_id in ``chat_id``; users and the bot share the counter."""
        next_id = self._message_ids.get(chat_id, 0) + 1
        self._message_ids[chat_id] = next_id
        return next_id

    def store_message(self, message: JSONDict) -> None:
        """Remember ``message`` as the current state of (chat_id, message_id)."""
        chat = message["chat"]
        self.remember_chat(chat)
        key = (int(chat["id"]), int(message["message_id"]))
        self._message_ids[key[0]] = max(self._message_ids.get(key[0], 0), key[1])
        self.messages[key] = copy.deepcopy(message)

    def remember_chat(self, chat: JSONDict) -> None:
        self.chats[int(chat["id"])] = copy.deepcopy(chat)

    def new_callback_query_id(self) -> str:
        query_id = str(next(self._callback_counter))
        self.callback_answers[query_id] = None
        return query_id

    def webhook_update(self, update: JSONDict) -> JSONDict:
        """``update`` with its update_id, its messages known to the server (as Telegram knows
        what it delivers): what a test posts to a bot in webhook mode."""
        update = copy.deepcopy(update)
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        update_id = int(update["update_id"])
        self._next_update_id = max(self._next_update_id, update_id + 1)

        for key in ("message", "edited_message", "channel_post", "edited_channel_post"):
            if isinstance(update.get(key), dict):
                self.store_message(update[key])
        query = update.get("callback_query")
        if isinstance(query, dict):
            self.callback_answers.setdefault(str(query["id"]), None)
            if isinstance(query.get("message"), dict) and "chat" in query["message"]:
                self.remember_chat(query["message"]["chat"])
        return update

    def push_update(self, update: JSONDict) -> int:
        """Queue ``update`` for getUpdates and wake a pending long poll."""
        update = self.webhook_update(update)
        update_id = int(update["update_id"])

        kind = next((key for key in update if key != "update_id"), "")
        allowed = self._allowed_updates
        if (allowed is None and kind in _OPT_IN_UPDATE_TYPES) or (
            allowed is not None and kind not in allowed
        ):
            # Telegram does not even create such updates for this bot.
            self.dropped_updates.append(update)
            return update_id

        self.pending_updates.append(update)
        self.pending_updates.sort(key=lambda u: int(u["update_id"]))
        self._updates_signal.notify()
        return update_id

    # ------------------------------------------------------------------ #
    # HTTP plumbing
    # ------------------------------------------------------------------ #

    async def _read_request(
        self, request: web.Request
    ) -> tuple[JSONDict, dict[str, bytes], dict[str, str]]:
        raw: JSONDict = dict(request.query)
        files: dict[str, bytes] = {}
        filenames: dict[str, str] = {}
        if request.can_read_body:
            content_type = request.content_type
            if content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _bad_request("can't parse JSON request body") from None
                if not isinstance(body, dict):
                    raise _bad_request("request body must be a JSON object")
                raw.update(body)
            elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
                try:
                    form = await request.post()
                except HTTPRequestEntityTooLarge:
                    raise _ApiError(413, "Request Entity Too Large") from None
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = value.file.read()
                        value.file.close()
                        filenames[key] = value.filename
                    elif isinstance(value, (bytes, bytearray)):
                        raw[key] = bytes(value).decode()
                    else:
                        raw[key] = value
        params = {key: _decode_field(key, value) for key, value in raw.items()}
        return params, files, filenames

    async def _handle_api(self, request: web.Request) -> web.Response:
        method_name = request.match_info["method"]
        entry = self._handlers.get(method_name.lower())
        canonical = entry[0] if entry else method_name
        handler = entry[1] if entry else None
        call = Call(method=canonical, params={})
        is_poll = canonical == "getUpdates"
        if is_poll:
            self._get_updates_started += 1
            self._polls_in_flight += 1
            self._calls_signal.notify()
        try:
            return await self._answer_api(request, call, handler)
        finally:
            if is_poll:
                self._polls_in_flight -= 1

    async def _answer_api(
        self, request: web.Request, call: Call, handler: _Handler | None
    ) -> web.Response:
        canonical = call.method
        try:
            call.params, call.files, call.filenames = await self._read_request(request)
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            self._inject_failure(canonical)
            self._check_blocked(call.params)
            body: JSONDict = {"ok": True, "result": await handler(call)}
            status = 200
        except _ApiError as error:
            body, status = error.body(), error.status
        except Exception as error:  # noqa: BLE001 - a bug in the fake must surface, not hang a test
            logger.exception("fake Telegram server crashed handling %s", canonical)
            self.server_errors.append(error)
            body = {"ok": False, "error_code": 500, "description": f"Internal Server Error: {error!r}"}
            status = 500
        call.response, call.status, call.failed = body, status, not body["ok"]
        self._record(call)
        return web.json_response(body, status=status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        if self._download_failures:
            status = self._download_failures.pop(0)
            return web.json_response(
                {"ok": False, "error_code": status, "description": "injected download failure"}, status=status
            )
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        self.downloads.append(stored.file_path)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _record(self, call: Call) -> None:
        self.all_calls.append(call)
        if call.method not in NOISE_METHODS:
            self.calls.append(call)
        self._calls_signal.notify()

    def _inject_failure(self, method: str) -> None:
        queue = self._failures.get(method.lower())
        if queue:
            failure = queue.pop(0)
            raise _ApiError(failure.status, failure.description, failure.parameters)

    def _check_blocked(self, params: JSONDict) -> None:
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int) and chat_id in self.blocked_chats:
            if chat_id > 0:
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            kind = "supergroup" if str(chat_id).startswith("-100") else "group"
            raise _ApiError(403, f"Forbidden: bot was kicked from the {kind} chat")

    # ------------------------------------------------------------------ #
    # Request helpers
    # ------------------------------------------------------------------ #

    @staticmethod
    def _now() -> int:
        return int(time.time())

    def _resolve_chat(self, params: JSONDict, key: str = "chat_id") -> JSONDict:
        value = params.get(key)
        if value is None or value == "":
            raise _bad_request(f"{key} is empty")
        if isinstance(value, str):
            if value.startswith("@"):
                for chat in self.chats.values():
                    if str(chat.get("username", "")).lower() == value[1:].lower():
                        return copy.deepcopy(chat)
            raise _bad_request("chat not found")
        if not isinstance(value, int) or isinstance(value, bool) or value == 0:
            raise _bad_request("chat not found")
        if value in self.chats:
            return copy.deepcopy(self.chats[value])
        if value > 0:
            return {"id": value, "type": "private", "first_name": "User"}
        if str(value).startswith("-100"):
            return {"id": value, "type": "supergroup", "title": "Group"}
        return {"id": value, "type": "group", "title": "Group"}

    @staticmethod
    def _required_int(params: JSONDict, key: str, error: str) -> int:
        value = params.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad_request(error)
        return value

    def _formatted(
        self,
        params: JSONDict,
        text_key: str,
        entities_key: str,
        *,
        limit: int,
        too_long: str,
        parse_mode: Any = None,
    ) -> tuple[str | None, list[JSONDict]]:
        raw = params.get(text_key)
        if raw is None or raw == "":
            return None, []
        raw = str(raw)
        explicit = params.get(entities_key)
        mode = params.get("parse_mode") if parse_mode is None else parse_mode
        if isinstance(explicit, list) and explicit:
            # Telegram ignores parse_mode once entities are given explicitly.
            text, entities = raw, explicit
        elif mode:
            text, entities = parse_formatted_text(raw, str(mode))
        else:
            text, entities = raw, []
        if _utf16_len(text) > limit:
            self.limit_violations.append(f"{text_key} of {_utf16_len(text)} characters (limit {limit})")
            raise _bad_request(too_long)
        return text, entities

    def _validate_reply_markup(self, markup: Any) -> JSONDict | None:
        """Validate like Telegram; return what a Message echoes (inline keyboards only)."""
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            # Reply keyboards / ForceReply / ReplyKeyboardRemove are accepted
            # but never echoed back inside the Message object.
            return None
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad_request(
                'can\'t parse inline keyboard button: field "inline_keyboard" must be an Array of Arrays'
            )
        actions = (
            "url", "callback_data", "web_app", "login_url", "switch_inline_query",
            "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
            "copy_text", "callback_game", "pay",
        )
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise _bad_request("can't parse inline keyboard button: Text must be non-empty")
                if not any(key in button for key in actions):
                    raise _bad_request(
                        "can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    self.limit_violations.append(f"callback_data of {len(str(data).encode())} bytes (limit 64)")
                    raise _bad_request("BUTTON_DATA_INVALID")
                url = button.get("url")
                if url is not None and not re.match(r"^(https?|tg)://\S+$", str(url)):
                    raise _bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
        return {"inline_keyboard": copy.deepcopy(rows)}

    def _reply_to(self, params: JSONDict, chat_id: int) -> JSONDict | None:
        reply = params.get("reply_parameters")
        allow_missing = _as_bool(params.get("allow_sending_without_reply", False))
        message_id: Any = None
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = _as_bool(reply.get("allow_sending_without_reply", allow_missing))
            if reply.get("chat_id") not in (None, chat_id):
                # Cross-chat replies become external_reply in Telegram; not modelled.
                return None
        elif params.get("reply_to_message_id") is not None:
            message_id = params["reply_to_message_id"]
        if message_id is None:
            return None
        stored = self.messages.get((chat_id, int(message_id)))
        if stored is None:
            if allow_missing:
                return None
            raise _bad_request("message to be replied not found")
        replied = copy.deepcopy(stored)
        replied.pop("reply_to_message", None)  # Telegram never nests replies deeper
        return replied

    def _send_extras(self, params: JSONDict, chat_id: int, *, with_markup: bool = True) -> JSONDict:
        """Fields shared by every send*: reply, markup, protection flags."""
        extras: JSONDict = {}
        reply = self._reply_to(params, chat_id)
        if reply is not None:
            extras["reply_to_message"] = reply
        if with_markup:
            markup = self._validate_reply_markup(params.get("reply_markup"))
            if markup is not None:
                extras["reply_markup"] = markup
        if _as_bool(params.get("protect_content", False)):
            extras["has_protected_content"] = True
        if isinstance(params.get("message_thread_id"), int):
            extras["message_thread_id"] = params["message_thread_id"]
        return extras

    def _new_message(self, chat: JSONDict, content: JSONDict) -> JSONDict:
        message: JSONDict = {
            "message_id": self.allocate_message_id(int(chat["id"])),
            "from": self.bot_user(),
            "chat": chat,
            "date": self._now(),
        }
        message.update({key: value for key, value in content.items() if value is not None})
        self.store_message(message)
        return copy.deepcopy(message)

    def _input_file(self, call: Call, value: Any, field_name: str) -> _InputFile | None:
        """Resolve an InputFile reference: multipart part, attach://, file_id or URL."""
        if value is None or value == "":
            if field_name in call.files:
                return _InputFile(call.files[field_name], call.filenames.get(field_name))
            return None
        if not isinstance(value, str):
            raise _bad_request("wrong file identifier/HTTP URL specified")
        if value.startswith("attach://"):
            part = value.removeprefix("attach://")
            if part not in call.files:
                raise _bad_request("can't parse InputMedia: media not found")
            return _InputFile(call.files[part], call.filenames.get(part))
        if value.startswith(("http://", "https://")):
            data = self._url_files.get(value, f"fake content of {value}".encode())
            name = value.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or None
            return _InputFile(data, name)
        existing = self._files.get(value)
        if existing is None:
            raise _bad_request("wrong file identifier/HTTP URL specified")
        return _InputFile(existing.data, existing.obj.get("file_name"), existing)

    def _media_object(self, kind: str, source: _InputFile) -> JSONDict:
        """Message fields for ``kind`` built from ``source`` (new upload or file_id)."""
        if source.existing is None and not source.data:
            raise _bad_request("file must be non-empty")
        if kind == "photo":
            if source.existing is not None and source.existing.photo_group is not None:
                return {"photo": copy.deepcopy(source.existing.photo_group)}
            return {"photo": self.add_photo(source.data)}
        if source.existing is not None and source.existing.kind == kind:
            obj = copy.deepcopy(source.existing.obj)
        else:
            name = source.filename
            mime = mimetypes.guess_type(name)[0] if name else None
            obj = self.add_media(kind, source.data, file_name=name, mime_type=mime)
        fields: JSONDict = {kind: obj}
        if kind == "animation":
            fields["document"] = copy.deepcopy(obj)  # Telegram sends both for GIFs
        return fields

    def _caption_fields(self, params: JSONDict, parse_mode: Any = None) -> JSONDict:
        caption, entities = self._formatted(
            params,
            "caption",
            "caption_entities",
            limit=MAX_CAPTION_LENGTH,
            too_long="message caption is too long",
            parse_mode=parse_mode,
        )
        fields: JSONDict = {"caption": caption}
        if caption is not None and entities:
            fields["caption_entities"] = entities
        if caption is not None and _as_bool(params.get("show_caption_above_media", False)):
            fields["show_caption_above_media"] = True
        if _as_bool(params.get("has_spoiler", False)):
            fields["has_media_spoiler"] = True
        return fields

    # ------------------------------------------------------------------ #
    # Bot API methods
    # ------------------------------------------------------------------ #

    def _handler_table(self) -> dict[str, _Handler]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "getFile": self._get_file,
            "sendMessage": self._send_message,
            "sendPhoto": self._media_sender("photo"),
            "sendDocument": self._media_sender("document"),
            "sendVideo": self._media_sender("video"),
            "sendAnimation": self._media_sender("animation"),
            "sendAudio": self._media_sender("audio"),
            "sendVoice": self._media_sender("voice"),
            "sendMediaGroup": self._send_media_group,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "editMessageMedia": self._edit_message_media,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "close": self._return_true,
            "logOut": self._return_true,
        }

    async def _return_true(self, call: Call) -> bool:
        return True

    async def _get_me(self, call: Call) -> JSONDict:
        return {
            **self.bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, call: Call) -> list[JSONDict]:
        params = call.params
        offset = params.get("offset")
        limit = params.get("limit", 100)
        timeout = params.get("timeout", 0)
        limit = min(max(int(limit), 1), 100) if isinstance(limit, int) else 100
        timeout = min(max(float(timeout), 0.0), 50.0) if isinstance(timeout, (int, float)) else 0.0
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            # An empty list means "back to the default set", as in Telegram.
            self._allowed_updates = frozenset(map(str, allowed)) or None

        if isinstance(offset, int) and not isinstance(offset, bool) and offset != 0:
            if offset > 0:
                self.pending_updates = [u for u in self.pending_updates if u["update_id"] >= offset]
            else:
                self.pending_updates = self.pending_updates[offset:]

        async def until_updates() -> None:
            while not self.pending_updates and not self._closing:
                await self._updates_signal.wait()

        if not self.pending_updates and timeout > 0 and not self._closing:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(until_updates(), timeout)
        return copy.deepcopy(self.pending_updates[:limit])

    async def _set_webhook(self, call: Call) -> bool:
        url = call.params.get("url")
        if not isinstance(url, str):
            raise _bad_request("bad webhook: URL is missing")
        secret = call.params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad_request("bad webhook: secret token contains unallowed characters")
        allowed = call.params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(map(str, allowed)) or None
        if _as_bool(call.params.get("drop_pending_updates", False)):
            self.pending_updates.clear()
        # The test delivers updates to the URL itself (the fake posts nothing).
        self.webhook_url = url
        return True

    async def _delete_webhook(self, call: Call) -> bool:
        if _as_bool(call.params.get("drop_pending_updates", False)):
            self.pending_updates.clear()
        self.webhook_url = ""
        return True

    async def _get_webhook_info(self, call: Call) -> JSONDict:
        return {"url": self.webhook_url, "has_custom_certificate": False,
                "pending_update_count": len(self.pending_updates)}

    async def _get_file(self, call: Call) -> JSONDict:
        file_id = call.params.get("file_id")
        stored = self._files.get(str(file_id)) if file_id else None
        if stored is None:
            raise _bad_request("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD_SIZE:
            raise _bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    async def _send_message(self, call: Call) -> JSONDict:
        chat = self._resolve_chat(call.params)
        text, entities = self._formatted(
            call.params, "text", "entities", limit=MAX_TEXT_LENGTH, too_long="message is too long"
        )
        if text is None or not text.strip():
            raise _bad_request("message text is empty")
        extras = self._send_extras(call.params, int(chat["id"]))
        return self._new_message(chat, {"text": text, "entities": entities or None, **extras})

    def _media_sender(self, kind: str) -> _Handler:
        async def send(call: Call) -> JSONDict:
            chat = self._resolve_chat(call.params)
            source = self._input_file(call, call.params.get(kind), kind)
            if source is None:
                raise _bad_request(f"there is no {kind} in the request")
            caption = self._caption_fields(call.params)
            extras = self._send_extras(call.params, int(chat["id"]))
            media = self._media_object(kind, source)
            return self._new_message(chat, {**media, **caption, **extras})

        return send

    async def _send_media_group(self, call: Call) -> list[JSONDict]:
        chat = self._resolve_chat(call.params)
        items = call.params.get("media")
        if not isinstance(items, list):
            raise _bad_request("can't parse media JSON object")
        if len(items) < 2:
            raise _bad_request("media must include 2-10 items")
        if len(items) > 10:
            raise _bad_request("too much messages to send as an album")
        kinds = [item.get("type") if isinstance(item, dict) else None for item in items]
        for kind in kinds:
            if kind not in ("photo", "video", "document", "audio"):
                raise _bad_request("can't parse InputMedia: unsupported media type")
        for exclusive in ("document", "audio"):
            if exclusive in kinds and any(kind != exclusive for kind in kinds):
                raise _bad_request(f"{exclusive} can't be mixed with other media types")

        # Resolve everything before creating messages: a bad item fails the whole album.
        prepared: list[JSONDict] = []
        for item in items:
            source = self._input_file(call, item.get("media"), "")
            if source is None:
                raise _bad_request("can't parse InputMedia: media not found")
            parse_mode = item.get("parse_mode") or call.params.get("parse_mode")
            caption = self._caption_fields(item, parse_mode=parse_mode)
            prepared.append({"kind": item["type"], "source": source, "caption": caption})
        extras = self._send_extras(call.params, int(chat["id"]), with_markup=False)

        group_id = str(next(self._media_group_counter))
        messages = []
        for entry in prepared:
            media = self._media_object(entry["kind"], entry["source"])
            content = {**media, **entry["caption"], **extras, "media_group_id": group_id}
            messages.append(self._new_message(copy.deepcopy(chat), content))
        return messages

    # --- edits -------------------------------------------------------------

    def _locate_editable(self, params: JSONDict) -> tuple[JSONDict, Callable[[JSONDict], None], bool]:
        inline_id = params.get("inline_message_id")
        if inline_id:
            inline_message = self.inline_messages.get(str(inline_id))
            if inline_message is None:
                raise _bad_request("MESSAGE_ID_INVALID")

            def store_inline(message: JSONDict) -> None:
                self.inline_messages[str(inline_id)] = copy.deepcopy(message)

            return copy.deepcopy(inline_message), store_inline, True
        chat = self._resolve_chat(params)
        message_id = self._required_int(params, "message_id", "message identifier is not specified")
        message = self.messages.get((int(chat["id"]), message_id))
        if message is None:
            raise _bad_request("message to edit not found")
        if message.get("from", {}).get("id") != self.bot_id:
            raise _bad_request("message can't be edited")
        return copy.deepcopy(message), self.store_message, False

    def _finish_edit(
        self, old: JSONDict, new: JSONDict, store: Callable[[JSONDict], None], inline: bool, params: JSONDict
    ) -> JSONDict | bool:
        markup = self._validate_reply_markup(params.get("reply_markup"))
        # Omitting reply_markup in an edit removes the inline keyboard - a classic gotcha.
        if markup is None:
            new.pop("reply_markup", None)
        else:
            new["reply_markup"] = markup
        strip = {"edit_date"}
        def content(message: JSONDict) -> JSONDict:
            return {key: value for key, value in message.items() if key not in strip}

        if content(old) == content(new):
            raise _bad_request(
                "message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message"
            )
        new["edit_date"] = self._now()
        store(new)
        return True if inline else copy.deepcopy(new)

    async def _edit_message_text(self, call: Call) -> JSONDict | bool:
        old, store, inline = self._locate_editable(call.params)
        if not inline and "text" not in old:
            raise _bad_request("there is no text in the message to edit")
        text, entities = self._formatted(
            call.params, "text", "entities", limit=MAX_TEXT_LENGTH, too_long="message is too long"
        )
        if text is None or not text.strip():
            raise _bad_request("message text is empty")
        new = copy.deepcopy(old)
        new["text"] = text
        if entities:
            new["entities"] = entities
        else:
            new.pop("entities", None)
        return self._finish_edit(old, new, store, inline, call.params)

    async def _edit_message_caption(self, call: Call) -> JSONDict | bool:
        old, store, inline = self._locate_editable(call.params)
        if not inline and not any(kind in old for kind in _MEDIA_KINDS):
            raise _bad_request("there is no caption in the message to edit")
        fields = self._caption_fields(call.params)
        new = copy.deepcopy(old)
        for key in ("caption", "caption_entities", "show_caption_above_media"):
            new.pop(key, None)
        new.update({k: v for k, v in fields.items() if v is not None and k != "has_media_spoiler"})
        return self._finish_edit(old, new, store, inline, call.params)

    async def _edit_message_reply_markup(self, call: Call) -> JSONDict | bool:
        old, store, inline = self._locate_editable(call.params)
        return self._finish_edit(old, copy.deepcopy(old), store, inline, call.params)

    async def _edit_message_media(self, call: Call) -> JSONDict | bool:
        old, store, inline = self._locate_editable(call.params)
        media = call.params.get("media")
        if not isinstance(media, dict) or media.get("type") not in _INPUT_MEDIA_KINDS:
            raise _bad_request("can't parse InputMedia JSON object")
        if not inline and not any(kind in old for kind in _MEDIA_KINDS):
            raise _bad_request("there is no media in the message to edit")
        source = self._input_file(call, media.get("media"), "")
        if source is None:
            raise _bad_request("can't parse InputMedia: media not found")
        caption = self._caption_fields(media, parse_mode=media.get("parse_mode"))
        new = copy.deepcopy(old)
        replaced = ("caption", "caption_entities", "show_caption_above_media", "has_media_spoiler")
        for key in (*_MEDIA_KINDS, *replaced):
            new.pop(key, None)
        new.update(self._media_object(str(media["type"]), source))
        new.update({k: v for k, v in caption.items() if v is not None})
        return self._finish_edit(old, new, store, inline, call.params)

    # --- misc ----------------------------------------------------------------

    async def _delete_message(self, call: Call) -> bool:
        chat = self._resolve_chat(call.params)
        message_id = self._required_int(call.params, "message_id", "message identifier is not specified")
        key = (int(chat["id"]), message_id)
        if self.messages.pop(key, None) is None:
            raise _bad_request("message to delete not found")
        self.deleted_messages.append(key)
        return True

    async def _delete_messages(self, call: Call) -> bool:
        chat = self._resolve_chat(call.params)
        ids = call.params.get("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise _bad_request("message_ids must be a non-empty list of at most 100 identifiers")
        for message_id in ids:
            key = (int(chat["id"]), int(message_id))
            if self.messages.pop(key, None) is not None:
                self.deleted_messages.append(key)
        return True

    async def _answer_callback_query(self, call: Call) -> bool:
        query_id = str(call.params.get("callback_query_id", ""))
        if query_id not in self.callback_answers:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        text = call.params.get("text")
        if text is not None and _utf16_len(str(text)) > MAX_CALLBACK_ANSWER_LENGTH:
            self.limit_violations.append(
                f"callback answer of {_utf16_len(str(text))} characters (limit {MAX_CALLBACK_ANSWER_LENGTH})"
            )
            raise _bad_request("MESSAGE_TOO_LONG")
        self.callback_answers[query_id] = dict(call.params)
        return True

    async def _send_chat_action(self, call: Call) -> bool:
        self._resolve_chat(call.params)
        if call.params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope if isinstance(scope, dict) and scope else {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    async def _set_my_commands(self, call: Call) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.match(str(command.get("command", ""))):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(call.params.get("scope"), call.params.get("language_code"))
        self._commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, call: Call) -> list[JSONDict]:
        return self.get_commands(call.params.get("scope"), str(call.params.get("language_code") or ""))

    async def _delete_my_commands(self, call: Call) -> bool:
        key = self._commands_key(call.params.get("scope"), call.params.get("language_code"))
        self._commands.pop(key, None)
        return True
