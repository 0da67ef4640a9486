"""Everything the bot says, in one place. Messages and captions are HTML: every value that comes
from users, movie names or the engine goes through `quote` (shortened, then escaped). Button
labels, callback answers and the command menu are plain text (Telegram shows them as given), so
nothing there is escaped."""

from __future__ import annotations

from html import escape
from typing import Iterable, Sequence

from core import MovieInfo, Timeline, format_ts
from core.search.timeline import format_clock, format_duration, format_share

from .services.storage import StoredResult, UsageStats
from .settings import MAX_TOPK

# Telegram refuses a message over 4096 characters and a caption over 1024 (counted after the HTML
# is parsed). The bot's own words are short; what can make a message too long is a value someone
# else wrote: a caption, a command's argument, a file name, a movie's name, an engine message. So
# every such value is shortened by `quote` before it is echoed, whatever its source.
ECHO_CHARS = 100  # a user's words quoted back ("No indexed movie matches “…”")
NAME_CHARS = 80  # a movie's name in a message (30 of them fit in /movies' list)
REASON_CHARS = 600  # an engine message written for users (why an image or an index is refused)


def esc(value: object) -> str:
    """HTML-escaped, whole: for the bot's own values only (numbers, its username)."""
    return escape(str(value), quote=False)


def quote(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as the bot may echo it in a message: whitespace runs as one space, at most `limit`
    characters (the cut marked with "…"), HTML-escaped. Shortened before escaping, because
    Telegram counts the text after parsing the HTML."""
    return esc(shorten(value, limit))


def shorten(value: object, limit: int) -> str:
    """`value` on one line and at most `limit` characters: plain text (buttons, callback answers)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def help_text(bot_username: str | None) -> str:
    mention = f"@{bot_username}" if bot_username else "@this_bot"
    return (
        "🎬 <b>castfinder</b> finds the shots of a movie in which a character appears.\n\n"
        "<b>1. Pick a movie</b>: /movies lists the indexed ones, or send "
        "<code>/movie Titanic</code> (any part of the name works).\n"
        "<b>2. Send screenshots</b> of the character: one photo, an album, or an image sent as a "
        "file. A caption may name the movie for that query only.\n"
        "<b>3. Get the best shots</b>: thumbnails with start–end times and how sure I am; "
        "<b>More</b> shows further results.\n\n"
        "If a screenshot shows several people, I number them and ask whom to look for.\n\n"
        "<b>Example</b>: <code>/movie Titanic</code>, then a screenshot of Rose → "
        "<code>#1 · shot 12 · 00:03:21.4–00:03:27.9 · 83%</code>\n\n"
        f"<b>Settings</b>: /topk &lt;1–{MAX_TOPK}&gt; results per query, /movie shows the current movie.\n"
        f"<b>In groups</b>: caption the photo with <code>/movie@{esc(bot_username or 'this_bot')} Titanic</code>, "
        f"mention {esc(mention)} in the caption, or reply to one of my messages."
    )


def movies_list(movies: Sequence[MovieInfo], current_slug: str | None, shown: int) -> str:
    if not movies:
        return "No movie is indexed yet. An admin adds one with <code>castfinder index</code>."
    lines = ["<b>Indexed movies</b> (tap one to pick it):"]
    for m in movies[:shown]:
        mark = " ✅" if m.slug == current_slug else ""
        lines.append(f"• {quote(m.name, NAME_CHARS)} — {duration(m.duration_s)}, {m.shots} shots{mark}")
    if len(movies) > shown:
        lines.append(f"… and {len(movies) - shown} more: use <code>/movie name</code>.")
    return "\n".join(lines)


def movie_set(movie: MovieInfo) -> str:
    return (
        f"🎬 Movie for this chat: <b>{quote(movie.name, NAME_CHARS)}</b> "
        f"({duration(movie.duration_s)}, {movie.shots} shots).\n"
        "Now send a screenshot of the character."
    )


def movie_button(name: str) -> str:
    # Long names would make the keyboard unreadable on a phone.
    return shorten(name, 60)


def movie_chosen(name: str) -> str:
    return f"{shorten(name, 60)} selected"  # a callback answer: Telegram allows 200 characters


def movie_choice_gone() -> str:
    return "That movie is no longer indexed; see /movies."


def current_movie(name: str | None) -> str:
    if name is None:
        return "No movie is selected in this chat. Pick one with /movies or <code>/movie name</code>."
    return f"🎬 The movie for this chat is <b>{quote(name, NAME_CHARS)}</b>. Change it with <code>/movie name</code>."


def choose_movie(query: str) -> str:
    return f"Several movies match “{quote(query)}”. Which one?"


def did_you_mean(query: str) -> str:
    return f"No indexed movie is called “{quote(query)}”. Did you mean one of these?"


def movie_not_found(query: str, closest: Sequence[str]) -> str:
    if closest:
        names = ", ".join(quote(n, NAME_CHARS) for n in closest[:5])
        return f"No indexed movie matches “{quote(query)}”. Closest: {names}. See /movies."
    return f"No indexed movie matches “{quote(query)}”, and no movie is indexed yet."


def movie_gone(name: str | None) -> str:
    return (
        f"The movie set for this chat ({quote(name or '?', NAME_CHARS)}) is no longer indexed. "
        "Pick another with /movies."
    )


def no_movie_selected() -> str:
    return (
        "Which movie? Pick one with /movies or <code>/movie name</code> first, "
        "or put the movie's name in the screenshot's caption."
    )


def caption_ignored(caption: str, movie: str) -> str:
    return f"(“{quote(caption)}” is not an indexed movie; searched {quote(movie, NAME_CHARS)}, this chat's movie.)"


def topk_current(n: int) -> str:
    return f"I show {n} results per query here. Change it with <code>/topk n</code> (1–{MAX_TOPK})."


def topk_set(n: int) -> str:
    return f"OK: {n} result{'s' if n != 1 else ''} per query in this chat."


def topk_invalid(arg: str) -> str:
    return f"“{quote(arg)}” is not a number from 1 to {MAX_TOPK}. Example: <code>/topk 5</code>"


def not_an_image(name: str | None) -> str:
    label = f"“{quote(name)}”" if name else "That file"
    return f"{label} is not an image. Send a screenshot as a photo or as a JPEG/PNG/WebP file."


def file_too_big(size_bytes: int, limit_mb: int) -> str:
    return (
        f"That file is {size_bytes / 1024 / 1024:.1f} MB; bots can download files up to {limit_mb} MB. "
        "Send the screenshot as a photo, or a smaller file."
    )


def unsupported_message() -> str:
    return "Send me a screenshot (a photo, or an image as a file). /help explains how."


def text_hint() -> str:
    return (
        "Send a screenshot of the character. To pick the movie, send "
        "<code>/movie name</code>, or see /movies."
    )


def album_skipped(skipped: int) -> str:
    if skipped == 1:
        return "1 part of the album is not an image and was left out."
    return f"{skipped} parts of the album are not an image and were left out."


def rate_limited(per_minute: int, retry_in: float) -> str:
    return (
        f"Easy there: at most {per_minute} queries per minute. "
        f"Try again in {max(1, int(retry_in + 0.999))} s."
    )


def flooding(retry_in: float) -> str:
    return (
        "You're sending messages faster than I can answer, so I'm skipping them for now. "
        f"Try again in {max(1, int(retry_in + 0.999))} s."
    )


def user_busy() -> str:
    return "You already have a query running. Wait for its answer, then send the next one."


def queue_full() -> str:
    return "I'm very busy right now and my queue is full. Please try again in a minute."


def shutting_down() -> str:
    return "I'm restarting. Please send that again in a minute."


def cancelled_by_shutdown() -> str:
    return "⛔ Stopped: I'm restarting. Please send that again in a minute."


def internal_error() -> str:
    return "Something went wrong on my side (it has been logged). Please try again."


def download_failed() -> str:
    return "I couldn't download your screenshot from Telegram; please send it again."


# -- status ------------------------------------------------------------------------------
def status_queued(position: int) -> str:
    return f"⏳ Busy: you are #{position} in line."


def status_downloading(count: int) -> str:
    return "⬇️ Downloading your screenshot…" if count == 1 else f"⬇️ Downloading {count} screenshots…"


def status_people(done: int, total: int) -> str:
    return "🧍 Finding people…" if total <= 1 else f"🧍 Finding people… ({done}/{total})"


def status_searching(movie: str) -> str:
    return f"🔎 Searching {quote(movie, NAME_CHARS)}…"


# -- people picker -----------------------------------------------------------------------
def pick_person(count: int) -> str:
    return f"I see {count} people. Whom should I look for? Tap a number, or All."


def pick_expired() -> str:
    return "That choice has expired. Send the screenshot again."


def pick_not_yours() -> str:
    return "Only the person who sent the screenshot can choose."


def pick_started(who: str) -> str:
    """`who` as the picker's button carries it: "all" or a person's number."""
    return "Searching for everyone…" if who == "all" else f"Searching for person {who}…"


def pick_all_button() -> str:
    return "All"


# -- results -----------------------------------------------------------------------------
def percent(confidence: float) -> int:
    return max(0, min(100, round(confidence * 100)))


def shot_label(shot: int, scene: int | None) -> str:
    """A frames-folder index numbers shots per scene, so "shot 3" alone would be ambiguous:
    `scene/shot` there, as the CLI prints it; a video's shots are numbered through the film."""
    return f"{scene}/{shot}" if scene is not None else str(shot)


def result_line(r: StoredResult) -> str:
    times = f"{format_ts(r.start_s, decimals=1)}–{format_ts(r.end_s, decimals=1)}"
    line = f"#{r.rank} · shot {shot_label(r.shot, r.scene)} · {times} · {percent(r.confidence)}%"
    return line + " · ⚠️ weak match" if r.low_confidence else line


def result_caption(r: StoredResult) -> str:
    return esc(result_line(r))


def results_text(movie: str, results: Sequence[StoredResult], *, total: int, notes: Iterable[str]) -> str:
    if not results:
        return f"No shot of <b>{quote(movie, NAME_CHARS)}</b> matched. Try another screenshot."
    first, last = results[0].rank, results[-1].rank
    confident = [r for r in results if not r.low_confidence]
    span = f"{first}–{last}" if last > first else f"{first}"
    if not confident:
        head = f"No confident match in <b>{quote(movie, NAME_CHARS)}</b>; the closest shots ({span} of {total}):"
    else:
        head = f"<b>{quote(movie, NAME_CHARS)}</b>: best shots {span} of {total}:"
    lines = [head, *(esc(result_line(r)) for r in results)]
    if len(confident) < len(results):
        lines.append("⚠️ Weak matches are under the confidence threshold: the character may not be in them.")
    lines.extend(notes)
    return "\n".join(lines)


def whole_image_note(whole: int, images: int) -> str:
    if images <= 1:
        return "🖼 I found no person in the screenshot, so I searched with the whole image."
    return f"🖼 I found no person in {whole} of {images} screenshots; those were searched as whole images."


def more_button(remaining: int) -> str:
    return f"More ({remaining} left)"


def no_more_results() -> str:
    return "No more results."


def results_expired() -> str:
    return "These results have expired. Send the screenshot again."


def button_expired() -> str:
    """A button whose data the bot cannot read, or that belongs to another chat: as expired."""
    return "This button no longer works. Send the screenshot again."


# -- admin -------------------------------------------------------------------------------
def admins_only() -> str:
    return "This command is for the bot's admins."


def stats(s: UsageStats, *, running: int, waiting: int, movies: int) -> str:
    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v / 1000:.2f} s"

    outcomes = ", ".join(f"{quote(k)} {v}" for k, v in s.outcomes.items()) or "—"
    top = ", ".join(f"{quote(k, NAME_CHARS)} ({v})" for k, v in s.top_movies) or "—"
    return "\n".join([
        "<b>Usage</b>",
        f"Queries: {s.total} (last 24 h: {s.last_24h}); users: {s.users}; chats: {s.chats}",
        f"Outcomes: {outcomes}",
        f"Latency of answered queries: p50 {ms(s.latency_p50_ms)}, p95 {ms(s.latency_p95_ms)}; "
        f"engine p50 {ms(s.engine_p50_ms)}",
        f"Top movies: {top}",
        f"Now: {running} running, {waiting} waiting; {movies} movies indexed",
    ])


# -- operator ----------------------------------------------------------------------------
def command_menu(*, group: bool) -> list[tuple[str, str]]:
    """(command, description) pairs for Telegram's command menu, private chats or groups."""
    if group:
        return [
            ("movie", "Set the movie, or caption a screenshot with it"),
            ("movies", "Indexed movies"),
            ("topk", f"Results per query (1-{MAX_TOPK})"),
            ("help", "How to use the bot"),
        ]
    return [
        ("movies", "Indexed movies, to pick one"),
        ("movie", "Set or show this chat's movie"),
        ("topk", f"Results per query (1-{MAX_TOPK})"),
        ("help", "How to use the bot"),
    ]


def invalid_settings(problems: object) -> str:
    return f"Invalid bot settings (environment or .env):\n{problems}"


def missing_token_help() -> str:
    return (
        "BOT_TOKEN is not set, so the bot cannot start.\n\n"
        "1. Talk to @BotFather in Telegram, send /newbot and copy the token it gives you.\n"
        "2. Put it in a file named .env in the folder you start castfinder from:\n\n"
        "       BOT_TOKEN=123456789:AAE-your-token-from-BotFather\n\n"
        "   (or export BOT_TOKEN in the environment). Optional settings, also in .env:\n"
        "       CASTFINDER_ADMIN_IDS=your numeric Telegram user id (for /stats)\n"
        "       CASTFINDER_TELEGRAM_API_BASE=http://localhost:8081  (a local telegram-bot-api)\n"
        "3. Run `castfinder bot` again.\n"
    )


def ambiguous_caption(query: str, candidates: Sequence[str]) -> str:
    # A short prefix ("the") may match a hundred movies: name a few, count the rest.
    names = ", ".join(quote(n, NAME_CHARS) for n in candidates[:10])
    more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
    return f"“{quote(query)}” matches several movies: {names}{more}. Write more of the name."


def bad_image(reason: str, position: int | None = None, total: int = 1) -> str:
    reason = reason.removeprefix("image: ")
    where = f"Screenshot {position} of {total}" if position is not None and total > 1 else "That screenshot"
    return f"{where} can't be used: {quote(reason, REASON_CHARS)}"


# --- The cast (/cast): the movie's main people, found at index time ------------------------------
def cast_caption(movie: str, shown: int) -> str:
    return (f"The cast of {quote(movie, NAME_CHARS)}: the {shown} people with the most screen time, with their "
            "screen time and share of the film. Tap a number to find that person's shots.")


def cast_button(number: int, screen: str) -> str:
    return f"{number} · {screen}"


def cast_none(movie: str) -> str:
    return f"No face was found in {quote(movie, NAME_CHARS)}, so it has no cast."


def cast_unavailable(movie: str) -> str:
    return (f"{quote(movie, NAME_CHARS)} has no cast yet: it was indexed before castfinder found casts, or "
            "without faces. Ask whoever runs this bot to re-index this movie to get its cast.")


def cast_started(number: int) -> str:
    return f"Looking for person {number}…"


def cast_expired() -> str:
    """A cast button that is too old, from another chat, or of a movie re-indexed since."""
    return "This cast sheet has expired. Send /cast again."


# -- Screen-time timeline (issue 13, part 3) ---------------------------------------------------------
def timeline_caption(timeline: Timeline) -> str:
    """The caption of the timeline picture sent with every answer (HTML): screen time, shots,
    share of the film, first and last appearance, and what the numbers are."""
    confident, weak, film = timeline.confident, timeline.weak, timeline.duration_s
    plural = "s" if len(confident) != 1 else ""
    if confident and timeline.first_s is not None and timeline.last_s is not None:
        about = "at least" if timeline.capped else "≈"
        lines = [f"🕒 <b>Screen time {about} {esc(format_duration(timeline.screen_time_s))}</b> in "
                 f"{len(confident)} shot{plural} ({esc(format_share(timeline.share))} of the film)"]
        if len(confident) == 1:
            lines.append(f"Seen at {esc(format_clock(timeline.first_s, film))}")
        else:
            lines.append(f"First seen {esc(format_clock(timeline.first_s, film))} · "
                         f"last {esc(format_clock(timeline.last_s, film))}")
    else:
        lines = ["🕒 <b>No confident match</b> over the whole film"]
    if weak:
        lines.append(f"Hatched: {len(weak)} weak match{'es' if len(weak) != 1 else ''}, not counted.")
    lines.append("<i>Screen time adds up the lengths of every confident matched shot in the film, "
                 "not only those listed.</i>")
    return "\n".join(lines)


# -- feedback on results ("✓ that's them" / "✗ not them", bot/handlers/feedback.py) ------------
def feedback_yes_button(rank: int) -> str:
    return f"✓{rank}"


def feedback_no_button(rank: int) -> str:
    return f"✗{rank}"


def feedback_applied(verdict: str, r: StoredResult) -> str:
    """The answer to the tap (a toast): what changed."""
    shot = shot_label(r.shot, r.scene)
    if verdict == "y":
        return f"✓ Shot {shot}: searching with this person's views too."
    return f"✗ Shot {shot} removed; look-alikes moved down."


def feedback_note(yes: int, no: int) -> str:
    """Under a list re-ranked by feedback: the albums above it were sent with the first answer."""
    return (f"🔁 Re-ranked with your feedback (✓ {yes} · ✗ {no}). The pictures above are from the first "
            "answer; the numbers here are the new ranking.")


def feedback_not_yours() -> str:
    return "Only the person who asked can correct these results."


def feedback_stale() -> str:
    return "This list has changed since: tap a button on the new one."


def feedback_failed(reason: str) -> str:
    return f"These results cannot be re-ranked: {quote(reason)}"


def feedback_stats(s: UsageStats) -> str:
    """/stats: how often users correct the bot."""
    share = f"{100 * s.corrected / s.answered:.0f}%" if s.answered else "—"
    return (f"Feedback: {s.corrected} of {s.answered} answers corrected ({share}); {s.rejected} with a ✗; "
            f"taps ✓ {s.yes_taps} · ✗ {s.no_taps}")


# -- preview clips (▶ under a results list; bot/handlers/clips.py) ------------------------------
def clip_button(rank: int) -> str:
    return f"▶ {rank}"


def clip_cutting() -> str:
    return "Cutting the clip…"


def clip_caption(shot: int, scene: int | None, start_s: float, end_s: float) -> str:
    """`shot 12 · 00:01:02.3–00:01:09.8`: the shot and the film times the clip shows."""
    return esc(f"shot {shot_label(shot, scene)} · {format_ts(start_s, decimals=1)}–{format_ts(end_s, decimals=1)}")


def clip_no_video() -> str:
    return ("This movie was indexed from a frames folder: there is no video to cut a clip from. "
            "The thumbnail still shows the shot.")


def clip_source_moved() -> str:
    # The engine's own message names the file on the server: for the log, not for users.
    return ("I can't cut clips of this movie right now: its video was moved or changed since it was "
            "indexed. The thumbnails still work; the bot's admin can re-index it or put the video back.")


def clip_no_shot() -> str:
    return "This shot is no longer in the movie's index (it was re-indexed). Send the screenshot again."


def clip_failed() -> str:
    return "Sorry, I couldn't cut this clip. The thumbnail still shows the shot."


def clip_busy() -> str:
    return "I'm still cutting your previous clip; tap again when it has arrived."


# -- which movie is this? (a screenshot with no movie set: bot/services/identify.py) -------------
def status_identifying() -> str:
    return "🔎 Which movie is this? Looking through every indexed movie…"


def identified(movie: str, shot: int, scene: int | None, at_s: float, confidence: float) -> str:
    return (f"🎬 Looks like <b>{quote(movie, NAME_CHARS)}</b>, shot {shot_label(shot, scene)} at "
            f"{format_ts(at_s, decimals=0)} ({percent(confidence)}% sure).\n"
            "Search this character in it, or set it as this chat's movie.")


def not_identified(closest: Sequence[str]) -> str:
    text = "🤷 This screenshot is not from any movie I have indexed."
    if closest:
        text += " Closest: " + ", ".join(f"<b>{quote(n, NAME_CHARS)}</b>" for n in closest) + "."
    return text + "\nPick a movie with /movies or <code>/movie name</code>, then send the screenshot again."


def identify_search_button(movie: str) -> str:
    return f"🔎 Search in {shorten(movie, 40)}"


def identify_set_button(movie: str) -> str:
    return f"🎬 Set {shorten(movie, 40)} for this chat"


def identify_searching(movie: str) -> str:
    return shorten(f"Searching {movie}…", 190)
