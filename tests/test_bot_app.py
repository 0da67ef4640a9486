"""Starting the bot: settings, the missing-token message, logging that never shows the token, and
`python -m bot` as a real process polling the fake Bot API server."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.app import create_app, run
from bot.logging_setup import RedactSecrets, configure_logging
from bot.settings import BotSettings
from tests.bot_support import ALICE, ALICE_CHAT, USER_ID, bot_settings, jpeg
from tests.conftest import DATA, PERSON_DETECTOR, REPO
from tests.fake_telegram import FakeTelegramServer, message_update


def test_without_bot_token_run_says_what_to_put_in_env(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    assert run([]) == 2
    err = capsys.readouterr().err
    assert "BOT_TOKEN is not set" in err
    assert "BOT_TOKEN=123456789:AAE-your-token-from-BotFather" in err and ".env" in err


def test_settings_come_from_env_file_and_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "BOT_TOKEN=42:from-dotenv\nCASTFINDER_ADMIN_IDS=11, 22\nCASTFINDER_TELEGRAM_API_BASE=http://localhost:8081/\n"
        "CASTFINDER_DB_PATH=state/bot.sqlite3\nCASTFINDER_QUERY_WORKERS=3\n"
    )
    monkeypatch.setenv("CASTFINDER_USER_RATE", "9")
    s = BotSettings()
    assert s.token() == "42:from-dotenv" and "from-dotenv" not in repr(s)
    assert s.admin_ids == {11, 22} and s.telegram_api_base == "http://localhost:8081"
    assert s.db_path == Path("state/bot.sqlite3") and s.query_workers == 3 and s.user_rate == 9
    monkeypatch.setenv("BOT_TOKEN", "42:from-env")  # the environment wins over .env
    assert BotSettings().token() == "42:from-env"
    monkeypatch.setenv("CASTFINDER_ADMIN_IDS", "alice")
    with pytest.raises(ValueError, match="numeric Telegram user ids"):
        BotSettings()


def test_the_redaction_filter_masks_the_token_in_messages_and_tracebacks() -> None:
    out = io.StringIO()
    handler = configure_logging("DEBUG", secrets=["123:SECRET"], stream=out)
    log = logging.getLogger("test.redact")
    try:
        log.info("calling https://api.telegram.org/bot%s/getMe", "123:SECRET")
        try:
            raise RuntimeError("failed: /bot123:SECRET/sendMessage")
        except RuntimeError:
            log.exception("boom")
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert "123:SECRET" not in text
    assert "bot***/getMe" in text and "RuntimeError: failed: /bot***/sendMessage" in text
    assert isinstance(handler.filters[0], RedactSecrets)


async def test_a_running_bot_never_logs_its_token(tmp_path: Path, titanic_engine) -> None:
    out = io.StringIO()
    async with FakeTelegramServer(token="987654:TOP-secret-token_value") as srv:
        settings = bot_settings(srv, tmp_path)
        handler = configure_logging("DEBUG", secrets=[], stream=out)  # no safety net: nothing may leak
        try:
            app = await create_app(settings, titanic_engine)
            await app.storage.set_movie(USER_ID, "titanic", "Titanic")
            srv.fail_next("sendMediaGroup", retry_after=1)
            task = asyncio.create_task(app.serve(handle_signals=False))
            await srv.wait_for_poll()
            srv.push_update(message_update(srv, chat=ALICE_CHAT, from_user=ALICE, text="/start"))
            srv.push_update(message_update(srv, chat=ALICE_CHAT, from_user=ALICE, photo_bytes=jpeg()))
            await srv.wait_until(lambda calls: any(c.method == "sendMessage" and "1–3 of 3" in c.params["text"]
                                                   for c in calls), timeout=30)
            await app.stop()
            await task
        finally:
            logging.getLogger().removeHandler(handler)
    logs = out.getvalue()
    assert "bot @castfinder_test_bot is up" in logs and "flood control on SendMediaGroup" in logs
    assert "TOP-secret" not in logs and "987654" not in logs.replace("id=987654", "")


@pytest.mark.skipif(not PERSON_DETECTOR.is_file(), reason=f"needs {PERSON_DETECTOR}")
async def test_python_m_bot_polls_answers_and_stops_cleanly_on_sigterm(tmp_path: Path, titanic_engine,
                                                                        tiny_dinov2: Path) -> None:
    async with FakeTelegramServer(token="555:process-secret") as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFINDER_")}
        env.update({
            "BOT_TOKEN": srv.token, "CASTFINDER_TELEGRAM_API_BASE": srv.base_url,
            "CASTFINDER_DB_PATH": str(tmp_path / "bot.sqlite3"), "CASTFINDER_LOG_LEVEL": "DEBUG",
            "CASTFINDER_INDEX_DIR": str(titanic_engine.settings.index_dir),
            "CASTFINDER_DETECTOR": str(PERSON_DETECTOR), "CASTFINDER_PERSON_CLASSES": "0,1",
            "CASTFINDER_DINOV2_MODEL": str(tiny_dinov2), "CASTFINDER_DEVICE": "cpu",
            "PYTHONPATH": str(REPO),
        })
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            await srv.wait_for_poll(timeout=60)  # models loaded, polling
            srv.push_update(message_update(srv, chat=ALICE_CHAT, from_user=ALICE, text="/movie titanic"))
            await srv.wait_for("sendMessage")
            srv.push_update(message_update(srv, chat=ALICE_CHAT, from_user=ALICE,
                                           photo_bytes=(DATA / "titanic" / "body_rose.jpg").read_bytes()))
            await srv.wait_until(lambda calls: any(c.method == "sendMessage" and "1–3 of 3" in c.params["text"]
                                                   for c in calls), timeout=60)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    logs = stderr.decode()
    assert proc.returncode == 0, logs
    assert "engine ready" in logs and "Received SIGTERM" in logs and "bot stopped" in logs
    assert "process-secret" not in logs + stdout.decode()
