"""castfinder's Telegram bot: a thin aiogram 3 adapter over the engine in `core`.

Entry point: `bot.app.run(argv)` (used by `castfinder bot` and `python -m bot`).
"""
