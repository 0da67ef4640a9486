"""castfinder: find the shots of a movie in which a character appears."""

__version__ = "0.1.0"
