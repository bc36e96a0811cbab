"""What the workers (threads: torch blocks) tell the app; posted with App.post_message, which is
thread-safe, and handled on the UI thread."""

from __future__ import annotations

from textual.message import Message

from megadoc.pipeline.ingest import Document
from megadoc.pipeline.session import Grounding, ReadDocument
from megadoc.tui.conversation import Exchange


class DocumentLoaded(Message):
    def __init__(self, document: Document) -> None:
        super().__init__()
        self.document = document


class ModelLoaded(Message):
    def __init__(self, name: str, device: str) -> None:
        super().__init__()
        self.name, self.device = name, device


class ReadProgressed(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class ReadFinished(Message):
    def __init__(self, read: ReadDocument) -> None:
        super().__init__()
        self.read = read


class ReadStopped(Message):
    """The read was cancelled (quitting); `tokens_saved` are in the cache for the next open."""

    def __init__(self, tokens_saved: int) -> None:
        super().__init__()
        self.tokens_saved = tokens_saved


class OpenFailed(Message):
    """The document or the model could not be loaded or read; `error` is one line for the user."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class Warned(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class AnswerPiece(Message):
    def __init__(self, exchange: Exchange, piece: str) -> None:
        super().__init__()
        self.exchange, self.piece = exchange, piece


class AnswerDone(Message):
    def __init__(self, exchange: Exchange, grounding: Grounding) -> None:
        super().__init__()
        self.exchange, self.grounding = exchange, grounding


class AnswerFailed(Message):
    def __init__(self, exchange: Exchange, error: str) -> None:
        super().__init__()
        self.exchange, self.error = exchange, error
